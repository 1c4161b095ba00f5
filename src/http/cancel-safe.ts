/**
 * A response body that is safe to cancel at any moment.
 *
 * @tus/server answers a download (GET) with `new Response(nodeStream)`. Node 20's undici turns a
 * Node stream into a web stream whose end it signals in a microtask after the last read
 * (`queueMicrotask(() => controller.close())`); when the body is cancelled in between (the client
 * closed its connection as the last bytes went out, and the response writer cancels the body on
 * `close`), that `close()` throws `ERR_INVALID_STATE` outside any promise: an uncaught exception,
 * which ends the process; over `Connection: close` it happens often enough to matter.
 *
 * This wrapper reads the inner body one chunk at a time and cancels it only when none of its
 * reads is pending, so the inner stream never sees a cancel while it is finishing a read.
 */
export function cancelSafe(body: ReadableStream<Uint8Array>): ReadableStream<Uint8Array> {
  const reader = body.getReader()
  let pending: Promise<unknown> | undefined
  return new ReadableStream<Uint8Array>(
    {
      async pull(controller) {
        const read = reader.read()
        pending = read
        try {
          const { done, value } = await read
          if (done) controller.close()
          else controller.enqueue(value)
        } catch (error) {
          controller.error(error)
        } finally {
          pending = undefined
        }
      },
      async cancel(reason) {
        await pending?.catch(() => {})
        await reader.cancel(reason)
      },
    },
    { highWaterMark: 0 },
  )
}
