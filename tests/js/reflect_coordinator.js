#!/usr/bin/env node
// A non-Python gRPC client for Floe's coordinator that knows nothing but its address.
//
// It learns the API through gRPC server reflection (grpc.reflection.v1alpha.ServerReflection)
// and reads no .proto file, then drives api.Coordinator the way grpcurl would:
//
//   node tests/js/reflect_coordinator.js 127.0.0.1:50051
//
// Every step prints one JSON object on its own line on stdout:
//   {"step":"services","services":[...]}                 ListServices through reflection
//   {"step":"methods","service":"api.Coordinator",...}   the methods reflection describes
//   {"step":"StartJob","request":{...},"response":{...}}
//   {"step":"GetJobStatus","request":{...},"response":{...}}
//   {"step":"GetJobStatus-invalid","request":{...},"code":3,"code_name":"INVALID_ARGUMENT",...}
// Exits 0 when every step ran (the invalid call is expected to fail), 1 otherwise.
"use strict";

const grpc = require("@grpc/grpc-js");
const { GrpcReflection } = require("grpc-js-reflection-client");

const SERVICE = "api.Coordinator";
const DEADLINE_MS = 30_000;
// The walkthrough's StartJob payload, as it stands.
const START_JOB = {
  table: { catalog: "default", namespace: "demo", table: "events" },
  requester: "demo-user",
  job_timeout_seconds: 600,
};
const LOADER_OPTIONS = { keepCase: true, longs: String, enums: String, defaults: true, oneofs: true };

function emit(obj) {
  process.stdout.write(`${JSON.stringify(obj)}\n`);
}

function codeName(code) {
  return Object.keys(grpc.status).find((name) => grpc.status[name] === code) || String(code);
}

function lookup(root, dotted) {
  return dotted.split(".").reduce((node, part) => (node ? node[part] : undefined), root);
}

function unary(client, method, request) {
  return new Promise((resolve, reject) => {
    client[method](request, { deadline: Date.now() + DEADLINE_MS }, (err, response) =>
      err ? reject(err) : resolve(response),
    );
  });
}

async function main() {
  const target = process.argv[2] || process.env.COORDINATOR_ADDRESS || "127.0.0.1:50051";
  const credentials = grpc.credentials.createInsecure();
  const reflection = new GrpcReflection(target, credentials);

  const services = await reflection.listServices("", { deadline: Date.now() + DEADLINE_MS });
  emit({ step: "services", target, services });
  if (!services.includes(SERVICE)) {
    throw new Error(`reflection at ${target} does not list ${SERVICE}: ${JSON.stringify(services)}`);
  }

  // file_containing_symbol: the server sends the file declaring api.Coordinator and its imports.
  const descriptor = await reflection.getDescriptorBySymbol(SERVICE, { deadline: Date.now() + DEADLINE_MS });
  const packageObject = descriptor.getPackageObject(LOADER_OPTIONS);
  const Coordinator = lookup(packageObject, SERVICE);
  if (typeof Coordinator !== "function") {
    throw new Error(`the reflected descriptor has no service ${SERVICE}`);
  }
  const methods = Object.entries(Coordinator.service).map(([name, def]) => ({
    name,
    path: def.path,
    client_streaming: def.requestStream,
    server_streaming: def.responseStream,
  }));
  emit({ step: "methods", service: SERVICE, methods });

  const client = new Coordinator(target, credentials);
  try {
    const started = await unary(client, "StartJob", START_JOB);
    emit({ step: "StartJob", request: START_JOB, response: started });

    const statusRequest = { job_id: started.job_id };
    const status = await unary(client, "GetJobStatus", statusRequest);
    emit({ step: "GetJobStatus", request: statusRequest, response: status });

    const badRequest = { job_id: "nope" };
    try {
      const unexpected = await unary(client, "GetJobStatus", badRequest);
      emit({ step: "GetJobStatus-invalid", request: badRequest, code: 0, code_name: "OK", response: unexpected });
    } catch (err) {
      if (typeof err.code !== "number") throw err;
      emit({
        step: "GetJobStatus-invalid",
        request: badRequest,
        code: err.code,
        code_name: codeName(err.code),
        details: err.details,
      });
    }
  } finally {
    client.close();
  }
}

main().then(
  () => process.exit(0),
  (err) => {
    const code = typeof err.code === "number" ? ` (gRPC ${codeName(err.code)})` : "";
    process.stderr.write(`reflect_coordinator: ${err.stack || err}${code}\n`);
    process.exit(1);
  },
);
