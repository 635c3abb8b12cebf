// Publish each line of FILE with MQTT.js (npm `mqtt`, what Butler SOS uses).
// usage: node mqttjs_pub.js HOST PORT QOS TOPIC FILE [WINDOW]
// Keeps at most WINDOW publishes unconfirmed; exits 0 once every callback fired without error.
const fs = require("fs");
const mqtt = require("mqtt");

const [host, port, qos, topic, path, windowArg] = process.argv.slice(2);
const window = Number(windowArg || 1000);
const lines = fs.readFileSync(path).toString().split("\n").filter((l) => l.length > 0);
const client = mqtt.connect({ host, port: Number(port), protocolVersion: 4, clean: true, reconnectPeriod: 0 });
let sent = 0;
let done = 0;
let failed = 0;
const timer = setTimeout(() => {
  console.error(`mqttjs_pub: timed out at ${done} of ${lines.length}`);
  process.exit(1);
}, 600000);

function pump() {
  while (sent < lines.length && sent - done < window) {
    // Count before publishing: MQTT.js may run the callback (and so pump) synchronously.
    const i = sent;
    sent += 1;
    client.publish(topic, lines[i], { qos: Number(qos) }, (err) => {
      done += 1;
      if (err) failed += 1;
      if (done === lines.length) {
        clearTimeout(timer);
        client.end(false, {}, () => process.exit(failed > 0 ? 1 : 0));
      } else {
        pump();
      }
    });
  }
}
client.on("connect", pump);
client.on("error", (e) => {
  console.error(`mqttjs_pub: ${e.message}`);
  process.exit(1);
});
