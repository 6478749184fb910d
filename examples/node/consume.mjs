// Read jetpost results from Node.js: every result record of a batch, in the
// order stored, one JSON line each on standard output.
//
//   NATS_URL=nats://127.0.0.1:4222 node consume.mjs BATCH [COUNT]
//
// With COUNT it stops after that many results (waiting for them); without,
// once it has read every result stored so far. The record format is
// ../../schemas/result.schema.json. An ordered consumer keeps no state on
// the server; a service that must resume where it stopped would use a
// durable consumer on the same subject instead.
import { connect } from "@nats-io/transport-node";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";

const [batch, count] = process.argv.slice(2);
if (!batch) {
  console.error("usage: node consume.mjs BATCH [COUNT]");
  process.exit(2);
}
const prefix = process.env.JETPOST_SUBJECT_PREFIX || "jetpost";
const stream = prefix.toUpperCase().replaceAll("-", "_") + "_RESULTS";
const nc = await connect({ servers: process.env.NATS_URL || "nats://127.0.0.1:4222" });
const js = jetstream(nc);

const subject = `${prefix}.results.${batch}`;
// Without COUNT: as many as are stored now. Stream info is all a results
// reader needs to be allowed (examples/nats-permissions.conf, user results).
let want = Number(count);
if (count === undefined) {
  const jsm = await jetstreamManager(nc, { checkAPI: false });
  const info = await jsm.streams.info(stream, { subjects_filter: subject });
  want = info.state.subjects?.[subject] ?? 0;
}
const consumer = await js.consumers.get(stream, { filter_subjects: [subject] });
let seen = 0, failed = 0;
if (want > 0) {
  const messages = await consumer.consume();
  for await (const m of messages) {
    const result = m.json();
    if (!result.ok) failed++;
    process.stdout.write(JSON.stringify(result) + "\n");
    seen++;
    if (seen >= want) break;
  }
}
console.error(`${seen} results of batch ${batch}, ${failed} failed`);
await nc.drain();
process.exitCode = failed > 0 ? 1 : 0;
