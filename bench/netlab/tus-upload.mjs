// tus-js-client uploading one file, as a Node app would, for bench/netlab/run (in the sender's
// namespace). Without --chunk-size the whole file goes as one Buffer in one PATCH; with it, in
// PATCHes of that many bytes. Prints {"url", "bytes", "patches"} on success (exit 0); exit 1
// with the reason on stderr on failure, 2 on bad usage. tus-js-client's own retry delays (0, 1,
// 3, 5 s, then it gives up), as an app that does not set them gets: a retried PATCH resumes at
// the offset the server reports, and "patches" counts the retried ones too.
//   node tus-upload.mjs ENDPOINT FILE [--chunk-size N]
import fs from 'node:fs'
import tus from 'tus-js-client'

const [endpoint, file, flag, n] = process.argv.slice(2)
if (!endpoint || !file || (flag && (flag !== '--chunk-size' || !/^[1-9][0-9]*$/.test(n ?? '')))) {
  console.error('usage: node tus-upload.mjs ENDPOINT FILE [--chunk-size N]')
  process.exit(2)
}
const data = fs.readFileSync(file)
let patches = 0
const options = {
  endpoint,
  metadata: { filename: 'netlab' },
  storeFingerprintForResuming: false,
  onAfterResponse(req) {
    if (req.getMethod() === 'PATCH') patches++
  },
  onError(err) {
    console.error(`tus-upload: ${err && err.message ? err.message : err}`)
    process.exit(1)
  },
  onSuccess() {
    console.log(JSON.stringify({ url: upload.url, bytes: data.length, patches }))
    process.exit(0)
  },
}
if (flag) options.chunkSize = Number(n)
const upload = new tus.Upload(data, options)
upload.start()
