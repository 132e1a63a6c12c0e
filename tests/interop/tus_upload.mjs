// tus_upload.mjs: uploads one file to a tus 1.0.0 endpoint with tus-js-client (the npm package,
// as an app would use it in Node) and prints one JSON object on stdout:
//   {"url": <upload URL>, "file_id": <Chapar-File-Id>, "bytes": <size>, ...}
// Exit 0 on success, 1 on any error (the reason on stderr), 2 on bad usage.
//
//   node tus_upload.mjs --endpoint URL --file PATH [--chunk-size N] [--metadata k=v ...]
//                       [--creation-with-upload] [--defer-length]
//                       [--abort-after BYTES --state FILE] [--resume-from FILE]
//
// Without --chunk-size the file's bytes go as one Buffer (one PATCH); with it, as a Readable
// stream (tus-js-client's StreamSource, as apps that stream use it). --abort-after stops the
// upload once at least BYTES were acknowledged by the relay, preferably in the middle of the
// next PATCH body, writes {"url","acked","bytes"} to the state file and exits 0. --resume-from
// continues the upload URL saved there (uploadUrl option, no endpoint, so a lost upload is an
// error rather than a silent new upload) and checks that the upload finished at that same URL.
//
// Kept to APIs that Node 18 has (Debian 12's nodejs).
import fs from 'node:fs'
import http from 'node:http'
import { PassThrough } from 'node:stream'
import tus from 'tus-js-client'

function usage(msg) {
  process.stderr.write(`tus_upload: ${msg}\n`)
  process.stderr.write(
    'usage: node tus_upload.mjs --endpoint URL --file PATH [--chunk-size N] [--metadata k=v ...]\n' +
      '         [--creation-with-upload] [--defer-length]\n' +
      '         [--abort-after BYTES --state FILE] [--resume-from FILE]\n',
  )
  process.exit(2)
}

function parseArgs(argv) {
  const o = { metadata: {} }
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]
    const val = () => {
      if (i + 1 >= argv.length) usage(`${a} needs a value`)
      return argv[++i]
    }
    const num = () => {
      const v = val()
      if (!/^[0-9]+$/.test(v)) usage(`${a} needs a non-negative integer, got ${v}`)
      return Number(v)
    }
    switch (a) {
      case '--endpoint':
        o.endpoint = val()
        break
      case '--file':
        o.file = val()
        break
      case '--chunk-size':
        o.chunkSize = num()
        if (o.chunkSize === 0) usage('--chunk-size must be positive')
        break
      case '--abort-after':
        o.abortAfter = num()
        break
      case '--state':
        o.state = val()
        break
      case '--resume-from':
        o.resumeFrom = val()
        break
      case '--metadata': {
        const kv = val()
        const eq = kv.indexOf('=')
        if (eq <= 0) usage(`--metadata needs k=v, got ${kv}`)
        o.metadata[kv.slice(0, eq)] = kv.slice(eq + 1)
        break
      }
      case '--creation-with-upload':
        o.creationWithUpload = true
        break
      case '--defer-length':
        o.deferLength = true
        break
      default:
        usage(`unknown argument ${a}`)
    }
  }
  if (!o.file) usage('--file is required')
  if (!o.endpoint && !o.resumeFrom) usage('--endpoint is required (unless --resume-from)')
  if (o.abortAfter != null && !o.state) usage('--abort-after needs --state')
  if (o.abortAfter != null && o.chunkSize == null) usage('--abort-after needs --chunk-size')
  if (o.abortAfter != null && o.resumeFrom) usage('--abort-after and --resume-from exclude each other')
  if (o.deferLength && o.chunkSize == null) usage('--defer-length needs --chunk-size (a stream)')
  return o
}

function fail(msg) {
  process.stderr.write(`tus_upload: ${msg}\n`)
  process.exit(1)
}

// HEAD on the upload URL, as a tus client would: returns {status, headers}.
function headUpload(url) {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method: 'HEAD', headers: { 'Tus-Resumable': '1.0.0' } }, (res) => {
      res.resume()
      res.on('end', () => resolve({ status: res.statusCode, headers: res.headers }))
    })
    req.setTimeout(20000, () => req.destroy(new Error('HEAD timed out')))
    req.on('error', reject)
    req.end()
  })
}

const opt = parseArgs(process.argv.slice(2))
let size
try {
  size = fs.statSync(opt.file).size
} catch (e) {
  fail(`cannot stat ${opt.file}: ${e.message}`)
}

let saved = null
if (opt.resumeFrom) {
  try {
    saved = JSON.parse(fs.readFileSync(opt.resumeFrom, 'utf8'))
  } catch (e) {
    fail(`cannot read state ${opt.resumeFrom}: ${e.message}`)
  }
  if (typeof saved.url !== 'string' || !saved.url) fail(`state ${opt.resumeFrom} has no url`)
}

// The source: a Buffer without a chunk size; a stream with one. A resumed upload starts at the
// offset the relay reports, which a plain stream cannot seek to, so it reads from an
// fs.ReadStream (tus-js-client's FileSource slices the file by offset).
let source
const sourceKind = opt.chunkSize == null ? 'buffer' : opt.resumeFrom ? 'file' : 'stream'
if (sourceKind === 'buffer') {
  source = fs.readFileSync(opt.file)
} else if (sourceKind === 'file') {
  source = fs.createReadStream(opt.file)
} else {
  source = fs.createReadStream(opt.file).pipe(new PassThrough())
}

const seen = { finalFileId: null, firstOffset: null, responses: [] }
let acked = 0 // bytes the relay has acknowledged (Upload-Offset of the last PATCH response)
let armed = false // abort mode: enough was acknowledged, stop inside the next PATCH
let aborting = false

const options = {
  endpoint: opt.resumeFrom ? null : opt.endpoint,
  uploadUrl: saved ? saved.url : null,
  metadata: opt.metadata,
  retryDelays: [0, 100, 500],
  storeFingerprintForResuming: false,
  onAfterResponse(req, res) {
    const method = req.getMethod()
    const status = res.getStatus()
    seen.responses.push(`${method} ${status}`)
    const fid = res.getHeader('Chapar-File-Id')
    seen.finalFileId = fid == null ? null : String(fid)
    if (method === 'HEAD' && seen.firstOffset == null && status >= 200 && status < 300) {
      const off = Number.parseInt(res.getHeader('Upload-Offset'), 10)
      if (!Number.isNaN(off)) seen.firstOffset = off
    }
  },
  onChunkComplete(_chunk, bytesAccepted) {
    acked = bytesAccepted
    if (opt.abortAfter == null || aborting) return
    // A whole PATCH went by without a progress event inside it: stop at this boundary instead.
    if (armed) stop('boundary')
    else if (acked >= opt.abortAfter && acked < size) armed = true
  },
  onProgress(bytesSent) {
    // Once armed, stop inside the next PATCH body: the relay sees a connection cut mid-chunk.
    if (armed && !aborting && bytesSent > acked) stop('mid-patch')
  },
  onSuccess(payload) {
    finish(payload && payload.lastResponse).catch((e) => fail(e.message))
  },
  onError(err) {
    if (!aborting) fail(`upload failed: ${err && err.message ? err.message : err}`)
  },
}
if (opt.chunkSize != null) options.chunkSize = opt.chunkSize
if (opt.deferLength) options.uploadLengthDeferred = true
else if (sourceKind === 'stream') options.uploadSize = size
if (opt.creationWithUpload) options.uploadDataDuringCreation = true

const upload = new tus.Upload(source, options)

function stop(where) {
  aborting = true
  upload.abort(false).then(
    () => {
      const state = { url: upload.url, acked, bytes: size, cut: where }
      fs.writeFileSync(opt.state, `${JSON.stringify(state)}\n`)
      process.stdout.write(`${JSON.stringify({ ...state, aborted: true })}\n`)
      // Let the reset reach the relay, then leave without waiting for anything else.
      setTimeout(() => process.exit(0), 100)
    },
    (e) => fail(`abort failed: ${e.message}`),
  )
}

async function finish(lastResponse) {
  if (aborting) return
  if (opt.abortAfter != null) fail(`upload finished before ${opt.abortAfter} bytes were acknowledged`)
  const url = upload.url
  if (saved && url !== saved.url) fail(`resumed upload finished at ${url}, not at ${saved.url}`)
  // The file id of the final response (the PATCH that completed the upload, or the POST of an
  // upload that is complete at creation, or the HEAD of one resumed when already complete).
  let finalId = null
  if (lastResponse) {
    const h = lastResponse.getHeader('Chapar-File-Id')
    if (h != null) finalId = String(h)
  }
  if (finalId == null) finalId = seen.finalFileId
  const head = await headUpload(url)
  const headId = head.headers['chapar-file-id'] == null ? null : String(head.headers['chapar-file-id'])
  const out = {
    url,
    file_id: finalId != null ? finalId : headId,
    bytes: size,
    source: sourceKind,
    final_response_file_id: finalId,
    head_status: head.status,
    head_offset: head.headers['upload-offset'] == null ? null : Number(head.headers['upload-offset']),
    head_file_id: headId,
    final_request: seen.responses.length ? seen.responses[seen.responses.length - 1] : null,
    requests: seen.responses.length,
  }
  if (saved) {
    out.resumed_from = seen.firstOffset
    out.acked_before = saved.acked
  }
  process.stdout.write(`${JSON.stringify(out)}\n`)
  if (out.file_id == null) fail('no Chapar-File-Id in the final response nor on HEAD of the upload URL')
  if (!/^[0-9a-f]{64}$/.test(out.file_id)) fail(`Chapar-File-Id is not 64 lowercase hex: ${out.file_id}`)
  if (finalId != null && headId != null && finalId !== headId)
    fail(`Chapar-File-Id differs: final response ${finalId}, HEAD ${headId}`)
  process.exit(0)
}

upload.start()
