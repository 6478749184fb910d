// Publish jetpost jobs from Node.js: one JSON object per line of a file
// (or standard input) becomes a job message on <prefix>.jobs.<batch>.
//
//   NATS_URL=nats://127.0.0.1:4222 node produce.mjs BATCH [FILE]
//
// The message format is ../../schemas/job-message.schema.json; the worker
// fills in what is left out (method GET, the subject's batch, an id derived
// from the content, enqueued_at). Nats-Msg-Id is the job's id, so
// publishing the same job again within the jobs stream's de-duplication
// window (JETPOST_DEDUP_WINDOW, 30m by default) stores it once.
import { createReadStream } from "node:fs";
import { createInterface } from "node:readline";
import { connect } from "@nats-io/transport-node";
import { jetstream } from "@nats-io/jetstream";

const [batch, file] = process.argv.slice(2);
if (!batch || !/^[A-Za-z0-9_-]{1,64}$/.test(batch)) {
  console.error("usage: node produce.mjs BATCH [FILE]   (BATCH: [A-Za-z0-9_-], at most 64)");
  process.exit(2);
}
const prefix = process.env.JETPOST_SUBJECT_PREFIX || "jetpost";
const nc = await connect({ servers: process.env.NATS_URL || "nats://127.0.0.1:4222" });
const js = jetstream(nc);

let published = 0, duplicates = 0;
const lines = createInterface({ input: file ? createReadStream(file) : process.stdin, crlfDelay: Infinity });
for await (const line of lines) {
  if (!line.trim()) continue;
  const job = JSON.parse(line);
  // Without an id there is no stable Nats-Msg-Id to give: the worker
  // derives the id, but a second publish is then a second request.
  const opts = job.id ? { msgID: job.id } : {};
  const ack = await js.publish(`${prefix}.jobs.${batch}`, line, opts);
  if (ack.duplicate) duplicates++;
  else published++;
}
console.error(`published ${published} jobs to ${prefix}.jobs.${batch} (${duplicates} duplicates dropped)`);
await nc.drain();
