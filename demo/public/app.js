// The demo page: tus uploads with tus-js-client's browser build (global `tus`) and the last
// sweep report from /api/sweep. Plain script, no build step.

const ENDPOINT = new URL('/files', location.href).href
// Several PATCHes per file, so that progress moves and Pause has something to interrupt.
const CHUNK_SIZE = 1024 * 1024
const SWEEP_POLL_MS = 5000

const dropZone = document.getElementById('drop-zone')
const fileInput = document.getElementById('file-input')
const list = document.getElementById('uploads')
const noUploads = document.getElementById('no-uploads')
const parallelUploads = document.getElementById('parallel-uploads')
const protocolSelect = document.getElementById('protocol')

// The protocol tus-js-client speaks: tus 1.0, or the IETF resumable uploads draft (interop 5 or
// 6). Remembered in localStorage, so that a reloaded page resumes in the protocol it chose.
const PROTOCOL_KEY = 'fastify-tus-demo:protocol'
const PROTOCOL_NAMES = {
  'tus-v1': 'tus 1.0',
  'ietf-draft-03': 'IETF draft, interop 5',
  'ietf-draft-05': 'IETF draft, interop 6',
}
const storage = {
  // Storage may be refused (some private windows): the choice is then not remembered.
  get: (key) => {
    try {
      return localStorage.getItem(key)
    } catch {
      return null
    }
  },
  set: (key, value) => {
    try {
      localStorage.setItem(key, value)
    } catch {}
  },
}
const savedProtocol = storage.get(PROTOCOL_KEY)
if (savedProtocol in PROTOCOL_NAMES) protocolSelect.value = savedProtocol
protocolSelect.addEventListener('change', () => {
  storage.set(PROTOCOL_KEY, protocolSelect.value)
  showParallelChoice()
})
// Parallel uploads are tus' concatenation extension, which the draft does not have.
function showParallelChoice() {
  parallelUploads.disabled = protocolSelect.value !== 'tus-v1'
}
showParallelChoice()

fileInput.addEventListener('change', () => {
  for (const file of fileInput.files) startUpload(file)
  // Lets the same file be picked again.
  fileInput.value = ''
})
for (const type of ['dragenter', 'dragover']) {
  dropZone.addEventListener(type, (event) => {
    event.preventDefault()
    dropZone.classList.add('over')
  })
}
dropZone.addEventListener('dragleave', () => dropZone.classList.remove('over'))
dropZone.addEventListener('drop', (event) => {
  event.preventDefault()
  dropZone.classList.remove('over')
  for (const file of event.dataTransfer.files) startUpload(file)
})

function el(tag, attrs = {}, text) {
  const node = document.createElement(tag)
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, value)
  if (text !== undefined) node.textContent = text
  return node
}

let rows = 0
function startUpload(file) {
  const n = ++rows
  const row = el('li', { class: 'upload', 'data-testid': 'upload', 'data-state': 'uploading' })
  const name = el('div', { class: 'name', id: `upload-name-${n}` }, file.name)
  const bar = el('progress', {
    max: String(file.size || 1),
    value: '0',
    'aria-labelledby': `upload-name-${n}`,
    'data-testid': 'upload-progress',
  })
  const amount = el('span', { class: 'amount', 'data-testid': 'upload-amount' })
  const status = el('span', { class: 'status', 'data-testid': 'upload-status', role: 'status' })
  const pause = el('button', { type: 'button', 'data-testid': 'upload-pause' }, 'Pause')
  const resume = el('button', { type: 'button', 'data-testid': 'upload-resume' }, 'Resume')
  const link = el('a', { class: 'url', 'data-testid': 'upload-url', hidden: '' })
  pause.setAttribute('aria-label', `Pause ${file.name}`)
  resume.setAttribute('aria-label', `Resume ${file.name}`)
  const protocol = protocolSelect.value
  const speaks = el(
    'span',
    { class: 'muted small', 'data-testid': 'upload-protocol' },
    PROTOCOL_NAMES[protocol],
  )
  const controls = el('div', { class: 'controls' })
  controls.append(pause, resume, status, speaks)
  row.append(name, amount, bar, controls, link)
  list.append(row)
  noUploads.hidden = true

  function show(state, text) {
    row.dataset.state = state
    status.textContent = text
    pause.disabled = state !== 'uploading'
    resume.disabled = state !== 'paused' && state !== 'failed'
  }
  function progress(sent, total) {
    bar.max = total || 1
    bar.value = sent
    const percent = total ? Math.floor((sent / total) * 100) : 100
    amount.textContent = `${percent}% · ${formatBytes(sent)} of ${formatBytes(total)}`
  }

  // With parallel uploads tus-js-client sends the file as that many partial uploads side by
  // side (the concatenation extension), then one final upload that joins them on the server.
  const parallel = protocol === 'tus-v1' ? Number(parallelUploads.value) || 1 : 1
  const upload = new tus.Upload(file, {
    endpoint: ENDPOINT,
    protocol,
    chunkSize: CHUNK_SIZE,
    // tus-js-client keeps the upload's URL in localStorage, under the file's name, type, size and
    // date, until it finishes: the same file picked again (after a reload, a closed tab) resumes
    // it, in whichever protocol is chosen then (one upload on the server, either protocol; one
    // sent in parallel parts resumes in tus 1.0 only).
    removeFingerprintOnSuccess: true,
    ...(parallel > 1 && { parallelUploads: parallel }),
    retryDelays: [0, 1000, 3000],
    metadata: { filename: file.name, filetype: file.type || 'application/octet-stream' },
    onProgress: progress,
    onSuccess() {
      progress(file.size, file.size)
      show('done', 'Done')
      link.href = upload.url
      link.textContent = upload.url
      link.hidden = false
      // Played from the download URL: the server answers the player's ranges, so it can seek.
      if (/^(video|audio)\//.test(file.type)) {
        const tag = file.type.startsWith('video/') ? 'video' : 'audio'
        row.append(
          el(tag, {
            src: upload.url,
            controls: '',
            preload: 'metadata',
            'data-testid': 'upload-player',
          }),
        )
      }
    },
    onError(error) {
      show('failed', `Failed: ${error.message || error}`)
    },
  })

  // tus-js-client's pause and resume: abort() stops the request in flight and keeps the upload
  // on the server; start() asks the server for its offset (HEAD) and goes on from there.
  pause.addEventListener('click', async () => {
    show('pausing', 'Pausing…')
    await upload.abort()
    // The upload may have finished (or failed) while the abort was under way.
    if (row.dataset.state === 'pausing') show('paused', 'Paused')
  })
  resume.addEventListener('click', () => {
    show('uploading', 'Uploading…')
    upload.start()
  })

  progress(0, file.size)
  show('uploading', 'Uploading…')
  resumeOrStart(upload, protocol, row, show)
}

// Resumes the newest unfinished upload of the same file, if this browser kept one (tus-js-client
// asks the server for its offset first), else starts a new one.
async function resumeOrStart(upload, protocol, row, show) {
  try {
    const previous = (await upload.findPreviousUploads()).filter(
      // Parallel parts are joined by tus' concatenation, which the draft does not have.
      (kept) => protocol === 'tus-v1' || !kept.parallelUploadUrls,
    )
    const newest = previous.sort((a, b) => (a.creationTime < b.creationTime ? 1 : -1))[0]
    if (newest) {
      upload.resumeFromPreviousUpload(newest)
      row.dataset.resumed = 'true'
      show('uploading', 'Resumed: uploading…')
    }
  } catch {
    // No storage (a private window, say): a new upload.
  }
  upload.start()
}

function formatBytes(n) {
  if (n < 1024) return `${n} B`
  const units = ['KiB', 'MiB', 'GiB', 'TiB']
  let value = n / 1024
  let unit = 0
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024
    unit++
  }
  return `${value.toFixed(value < 10 ? 1 : 0)} ${units[unit]}`
}

function formatMs(ms) {
  if (ms % 3_600_000 === 0) return `${ms / 3_600_000} h`
  if (ms % 60_000 === 0) return `${ms / 60_000} min`
  if (ms % 1000 === 0) return `${ms / 1000} s`
  return `${ms} ms`
}

// The last sweep report

const sweepReport = document.getElementById('sweep-report')
const sweepSettings = document.getElementById('sweep-settings')
const sweepUpdated = document.getElementById('sweep-updated')
document.getElementById('sweep-refresh').addEventListener('click', refreshSweep)

async function refreshSweep() {
  try {
    const response = await fetch('/api/sweep', { cache: 'no-store' })
    if (!response.ok) throw new Error(`HTTP ${response.status}`)
    renderSweep(await response.json())
    sweepUpdated.textContent = `Updated ${new Date().toLocaleTimeString()}`
  } catch (error) {
    sweepUpdated.textContent = `Could not load the sweep report: ${error.message}`
  }
}

function renderSweep({ last, expireAfterMs, cleanupIntervalMs }) {
  sweepSettings.textContent =
    expireAfterMs === 0
      ? 'Expiry is off: nothing is swept.'
      : `Unfinished uploads idle for ${formatMs(expireAfterMs)} expire; ` +
        `a sweep runs every ${formatMs(cleanupIntervalMs)}.`
  if (!last) {
    sweepReport.replaceChildren(el('p', { 'data-testid': 'sweep-none' }, 'No sweep yet.'))
    return
  }
  const fields = [
    ['removed', 'Removed', String(last.removed)],
    ['partials', 'Of which partial uploads', String(last.partials ?? 0)],
    ['scanned', 'Scanned', String(last.scanned)],
    ['bytes-freed', 'Bytes freed', formatBytes(last.bytesFreed)],
    ['errors', 'Errors', String(last.errors)],
    ['skipped-busy', 'Skipped (busy)', String(last.skippedBusy)],
    ['started-at', 'Started at', last.startedAt],
    ['duration', 'Duration', `${last.durationMs} ms`],
  ]
  const dl = el('dl', { class: 'report' })
  for (const [key, label, value] of fields) {
    dl.append(el('dt', {}, label), el('dd', { 'data-testid': `sweep-${key}` }, value))
  }
  const notes = []
  if (last.dryRun) notes.push('dry run')
  if (last.aborted) notes.push('stopped before the end')
  sweepReport.replaceChildren(dl)
  if (notes.length > 0) sweepReport.append(el('p', { class: 'muted' }, notes.join(', ')))
}

refreshSweep()
setInterval(refreshSweep, SWEEP_POLL_MS)
