#!/usr/bin/env node
// The README walkthrough from a non-Python client that knows only two addresses (issue 14).
//
// It learns api.Coordinator and api.Worker through gRPC server reflection, reads no .proto file, and
// follows the walkthrough step by step, then retries AssignTasks late, as a scheduler whose first
// answer was lost would:
//
//   node tests/js/walkthrough.js COORDINATOR_ADDRESS WORKER_ADDRESS WORKER_ID
//
// Every step prints one JSON object on its own line on stdout ({"step": ..., "response"|"code": ...}).
// Exits 0 when every step ran (refusals are recorded, not thrown), 1 otherwise.
"use strict";

const grpc = require("@grpc/grpc-js");
const { GrpcReflection } = require("grpc-js-reflection-client");

const DEADLINE_MS = 30_000;
const LOADER_OPTIONS = { keepCase: true, longs: String, enums: String, defaults: true, oneofs: true };

function emit(obj) {
  process.stdout.write(`${JSON.stringify(obj)}\n`);
}

function codeName(code) {
  return Object.keys(grpc.status).find((name) => grpc.status[name] === code) || String(code);
}

async function service(target, name, credentials) {
  const reflection = new GrpcReflection(target, credentials);
  const descriptor = await reflection.getDescriptorBySymbol(name, { deadline: Date.now() + DEADLINE_MS });
  const Service = name.split(".").reduce((node, part) => node[part], descriptor.getPackageObject(LOADER_OPTIONS));
  return new Service(target, credentials);
}

function call(client, method, request) {
  return new Promise((resolve) => {
    client[method](request, { deadline: Date.now() + DEADLINE_MS }, (err, response) =>
      resolve(err ? { code: err.code, code_name: codeName(err.code), details: err.details } : { response }),
    );
  });
}

async function step(name, client, method, request) {
  const out = await call(client, method, request);
  emit({ step: name, request, ...out });
  return out;
}

async function main() {
  const [coordinatorTarget, workerTarget, workerId] = process.argv.slice(2);
  const credentials = grpc.credentials.createInsecure();
  const coordinator = await service(coordinatorTarget, "api.Coordinator", credentials);
  const worker = await service(workerTarget, "api.Worker", credentials);
  try {
    const table = { catalog: "default", namespace: "demo", table: "events" };
    const started = await step("StartJob", coordinator, "StartJob", {
      table,
      requester: "demo-user",
      job_timeout_seconds: 600,
    });
    const jobId = started.response.job_id;
    const snapshot = {
      snapshot_id: started.response.snapshot.snapshot_id,
      commit_uuid: started.response.snapshot.commit_uuid,
    };
    const assign = { worker_id: workerId, job_id: jobId, table, snapshot, tasks: [{ task_id: "task-1" }, { task_id: "task-2" }] };
    await step("AssignTasks", worker, "AssignTasks", assign);
    await step("AssignTasks-again", worker, "AssignTasks", assign);
    let status;
    for (let i = 0; i < 600; i += 1) {
      status = await call(coordinator, "GetJobStatus", { job_id: jobId });
      if (!status.response || status.response.ready_to_commit || status.response.state === "FAILED") break;
      await new Promise((r) => setTimeout(r, 100));
    }
    emit({ step: "GetJobStatus-ready", ...status });
    await step("CommitJob", coordinator, "CommitJob", { job_id: jobId });
    await step("AssignTasks-late-retry", worker, "AssignTasks", assign);
    await step("AssignTasks-late-new", worker, "AssignTasks", { ...assign, tasks: [{ task_id: "task-1" }, { task_id: "task-3" }] });
    await step("GetJobStatus-final", coordinator, "GetJobStatus", { job_id: jobId });
  } finally {
    coordinator.close();
    worker.close();
  }
}

main().then(
  () => process.exit(0),
  (err) => {
    process.stderr.write(`walkthrough: ${err.stack || err}\n`);
    process.exit(1);
  },
);
