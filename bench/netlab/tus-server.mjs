// @tus/server with its FileStore, as its README sets it up, for bench/netlab/run (in relay A's
// namespace). Usage: node tus-server.mjs HOST PORT DIRECTORY — prints "listening" on stdout once
// it listens; SIGTERM or SIGINT stops it.
import { Server } from '@tus/server'
import { FileStore } from '@tus/file-store'

const [host, port, directory] = process.argv.slice(2)
if (!host || !port || !directory) {
  console.error('usage: node tus-server.mjs HOST PORT DIRECTORY')
  process.exit(2)
}
const server = new Server({ path: '/files', datastore: new FileStore({ directory }) })
const http = server.listen({ host, port: Number(port) }, () => console.log('listening'))
for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => http.close(() => process.exit(0)))
