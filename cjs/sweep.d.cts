/**
 * Types of `require('fastify-tus/sweep')`: the ES module's (dist/src/sweep/index.d.ts), for
 * CommonJS TypeScript files.
 */
import type * as esm from '../dist/src/sweep/index.js' with { 'resolution-mode': 'import' }

export type HeldLease = esm.HeldLease
export type SweepLease = esm.SweepLease
export type RedisClient = esm.RedisClient
export type RedisLockerOptions = esm.RedisLockerOptions
export type RedisSubscriber = esm.RedisSubscriber
export type ExpiringFileStoreOptions = esm.ExpiringFileStoreOptions
export type HeldLock = esm.HeldLock
export type SweepLocker = esm.SweepLocker
export type Removal = esm.Removal
export type SweepFs = esm.SweepFs
export type SweepLogger = esm.SweepLogger
export type SweepOptions = esm.SweepOptions
export type SweepReport = esm.SweepReport
export type S3Removal = esm.S3Removal
export type S3SweepClient = esm.S3SweepClient
export type S3SweepOptions = esm.S3SweepOptions

export declare const RedisSweepLease: typeof esm.RedisSweepLease
export type RedisSweepLease = esm.RedisSweepLease
export declare const RedisLocker: typeof esm.RedisLocker
export type RedisLocker = esm.RedisLocker
export declare const ExpiringFileStore: typeof esm.ExpiringFileStore
export type ExpiringFileStore = esm.ExpiringFileStore
export declare const ActivityLocker: typeof esm.ActivityLocker
export type ActivityLocker = esm.ActivityLocker
export declare const sweepDirectory: typeof esm.sweepDirectory
export declare const sweepS3Bucket: typeof esm.sweepS3Bucket
