/**
 * What /proc tells of the processes of this machine (Linux), for tests that check that no
 * process outlives the one that started it.
 */
import fs from 'node:fs/promises'

/** The pids of the processes that have `file` open (none: `[]`). */
export async function processesHolding(file: string): Promise<number[]> {
  const holders: number[] = []
  for (const pid of await fs.readdir('/proc').catch(() => [])) {
    if (!/^\d+$/.test(pid)) continue
    const fds = await fs.readdir(`/proc/${pid}/fd`).catch(() => [])
    for (const fd of fds) {
      const target = await fs.readlink(`/proc/${pid}/fd/${fd}`).catch(() => '')
      if (target === file || target === `${file} (deleted)`) {
        holders.push(Number(pid))
        break
      }
    }
  }
  return holders
}

/**
 * Resolves once no process has `file` open (a copy killed with its server ends the call it is
 * in first), or rejects after `timeoutMs`.
 */
export async function closedByAll(file: string, timeoutMs = 5000): Promise<void> {
  const until = performance.now() + timeoutMs
  for (;;) {
    const holders = await processesHolding(file)
    if (holders.length === 0) return
    if (performance.now() > until) {
      throw new Error(`${file} is still open in process ${holders.join(', ')}`)
    }
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
}
