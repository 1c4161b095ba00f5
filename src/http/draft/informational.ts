/**
 * The informational answer `104 (Upload Resumption Supported)`. Node 20 has no public API for a
 * 1xx of any code: `writeContinue()` (100), `writeProcessing()` (102) and `writeEarlyHints()`
 * (103) each write their status line and fields with the response's `_writeRaw()` before any
 * header of the final answer is sent, which is what is done here for 104. `_writeRaw` queues the
 * bytes when the socket is not yet assigned and drops them once the connection is gone, as for
 * those three.
 *
 * -03 and -05, "Draft Version Identification": "Server implementations of draft versions of the
 * protocol MUST also send a header field `Upload-Draft-Interop-Version` with the interop version
 * as its value to the `104 (Upload Resumption Supported)` informational response."
 */
import type { ServerResponse } from 'node:http'

type RawWriter = { _writeRaw?: (data: string, encoding: 'latin1', cb?: () => void) => boolean }

/** Field values safe on a status line's fields: visible ASCII and spaces, nothing else. */
const SAFE_VALUE = /^[\x20-\x7e]*$/

/**
 * Sends `104 Upload Resumption Supported` with `fields` before the final answer, when it can be:
 * over HTTP/1.1 (RFC 9110, 15.2: "A server MUST NOT send a 1xx response to an HTTP/1.0 client";
 * HTTP/2 has no `_writeRaw`), before the final answer's header, on a connection still open.
 * Resolves `false` when nothing was sent: the 104 is optional ("Since informational responses
 * are optional", -03), the final answer carries `Location` anyway.
 */
export function sendUploadResumptionSupported(
  res: ServerResponse,
  fields: Readonly<Record<string, string>>,
): boolean {
  const writer = res as ServerResponse & RawWriter
  if (typeof writer._writeRaw !== 'function') return false
  if (res.headersSent || res.destroyed || res.req?.httpVersion !== '1.1') return false
  let head = 'HTTP/1.1 104 Upload Resumption Supported\r\n'
  for (const [name, value] of Object.entries(fields)) {
    if (!SAFE_VALUE.test(value)) return false
    head += `${name}: ${value}\r\n`
  }
  writer._writeRaw(`${head}\r\n`, 'latin1')
  return true
}
