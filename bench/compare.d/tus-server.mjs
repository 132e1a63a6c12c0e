// The peer for bench/compare: Node's @tus/server with its FileStore, as its README sets it up.
// Usage: node tus-server.mjs DIRECTORY   — listens on 127.0.0.1 (a free port), prints
// "port=N" on stdout once it listens; SIGTERM or SIGINT stops it.
import { Server } from '@tus/server';
import { FileStore } from '@tus/file-store';

const directory = process.argv[2];
if (!directory) {
        console.error('usage: node tus-server.mjs DIRECTORY');
        process.exit(1);
}
const server = new Server({ path: '/files', datastore: new FileStore({ directory }) });
const http = server.listen({ host: '127.0.0.1', port: 0 }, () => {
        console.log(`port=${http.address().port}`);
});
for (const sig of ['SIGTERM', 'SIGINT']) {
        process.on(sig, () => http.close(() => process.exit(0)));
}
