// A private Aedes broker for mqlink's interop suite (started by mqlink-testkit's Aedes).
//
// Usage: node aedes-server.mjs --port N [--tls-port M --cert FILE --key FILE]
//                              [--deny-publish PREFIX]
// Listens on 127.0.0.1 only, keeps everything in memory (Aedes' default persistence, as a
// plain `aedes` setup does), prints "aedes ready" once every listener is bound, and exits
// on SIGTERM after closing the broker. --deny-publish refuses publishes to topics under
// PREFIX/ (Aedes' authorizePublish hook, the way Aedes users write ACLs).
import fs from 'node:fs'
import net from 'node:net'
import tls from 'node:tls'
import { Aedes } from 'aedes'

function parseArgs (argv) {
  const opts = {}
  for (let i = 0; i < argv.length; i += 2) {
    const key = argv[i]
    const value = argv[i + 1]
    if (!key.startsWith('--') || value === undefined) {
      throw new Error(`bad argument ${key}: expected --name value pairs`)
    }
    opts[key.slice(2)] = value
  }
  if (!opts.port) throw new Error('--port is required')
  return opts
}

function listen (server, port) {
  return new Promise((resolve, reject) => {
    server.once('error', reject)
    server.listen(Number(port), '127.0.0.1', resolve)
  })
}

const opts = parseArgs(process.argv.slice(2))
const aedes = await Aedes.createBroker()
if (opts['deny-publish']) {
  const prefix = opts['deny-publish'] + '/'
  aedes.authorizePublish = (client, packet, callback) => {
    if (client && packet.topic.startsWith(prefix)) {
      callback(new Error(`publish to ${packet.topic} denied`))
    } else {
      callback(null)
    }
  }
}
aedes.on('clientError', (client, err) => {
  console.log('client error', client && client.id, err.message)
})

const servers = [net.createServer(aedes.handle)]
await listen(servers[0], opts.port)
if (opts['tls-port']) {
  const secure = tls.createServer({
    cert: fs.readFileSync(opts.cert),
    key: fs.readFileSync(opts.key)
  }, aedes.handle)
  servers.push(secure)
  await listen(secure, opts['tls-port'])
}
console.log(`aedes ready (version ${aedes.version ?? 'unknown'})`)

process.on('SIGTERM', () => {
  aedes.close(() => {
    for (const s of servers) s.close()
    process.exit(0)
  })
})
