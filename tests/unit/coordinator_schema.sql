CREATE TABLE "deployments" (
   "fleet" TEXT,
   "name" TEXT,
   "version" INTEGER,
   "deployed_at" REAL,
   "spec" TEXT,
   PRIMARY KEY ("fleet", "name")
);
CREATE TABLE "devices" (
   "fleet" TEXT,
   "device_id" TEXT,
   "online" INTEGER,
   "last_seen" REAL,
   "state" TEXT,
   "model" TEXT,
   "version" INTEGER,
   "chunks_held" INTEGER,
   "chunks_total" INTEGER,
   "reason" TEXT,
   "active" TEXT,
   "rejections" INTEGER,
   "boot" TEXT,
   "agent" TEXT,
   "profile" TEXT,
   "updated" REAL,
   "limited_requests" INTEGER,
   "limited_reports" INTEGER,
   "limited_at" REAL,
   "clock_skew" REAL,
   "clock_checked" REAL,
   PRIMARY KEY ("fleet", "device_id")
);
CREATE TABLE "drift" (
   "fleet" TEXT,
   "device" TEXT,
   "boot" TEXT,
   "seq" INTEGER,
   "ts" REAL,
   "hist" INTEGER,
   "received_at" REAL,
   "model" TEXT,
   "version" INTEGER,
   "variant" TEXT,
   "count" INTEGER,
   "cos_mean" REAL,
   "cos_var" REAL,
   "n_directions" INTEGER,
   "n_bins" INTEGER,
   "bins" BLOB,
   "proj_mean" BLOB,
   "epsilon" REAL
);
CREATE TABLE "events" (
   "fleet" TEXT,
   "device" TEXT,
   "boot" TEXT,
   "seq" INTEGER,
   "ts" REAL,
   "event" TEXT,
   "reason" TEXT,
   "detail" TEXT,
   "topic" TEXT,
   "model" TEXT,
   "version" INTEGER,
   "hist" INTEGER,
   "dropped" INTEGER,
   "received_at" REAL
);
CREATE TABLE "fleet_config" (
   "fleet" TEXT,
   "selector" TEXT,
   "settings" TEXT,
   "updated" REAL,
   PRIMARY KEY ("fleet", "selector")
);
CREATE TABLE "index_state" (
   "fleet" TEXT PRIMARY KEY,
   "seq" INTEGER,
   "published_at" REAL
);
CREATE TABLE "metrics" (
   "fleet" TEXT,
   "device" TEXT,
   "boot" TEXT,
   "seq" INTEGER,
   "ts" REAL,
   "hist" INTEGER,
   "received_at" REAL,
   "interval_s" REAL,
   "uptime_s" REAL,
   "cpu_pct" REAL,
   "rss_mb" REAL,
   "disk_free_mb" REAL,
   "reconnects" INTEGER,
   "bytes_received" INTEGER,
   "inferences" INTEGER,
   "errors" INTEGER,
   "latency_p50_ms" REAL,
   "latency_p95_ms" REAL,
   "dropped" INTEGER,
   "active" TEXT
);
CREATE TABLE "model_metrics" (
   "fleet" TEXT,
   "device" TEXT,
   "boot" TEXT,
   "seq" INTEGER,
   "ts" REAL,
   "model" TEXT,
   "version" INTEGER,
   "inferences" INTEGER,
   "errors" INTEGER,
   "latency_p50_ms" REAL,
   "latency_p95_ms" REAL,
   "received_at" REAL
);
CREATE TABLE "releases" (
   "fleet" TEXT,
   "name" TEXT,
   "version" INTEGER,
   "size" INTEGER,
   "sha256" TEXT,
   "chunk_size" INTEGER,
   "n_chunks" INTEGER,
   "block_chunks" INTEGER,
   "manifest" BLOB NOT NULL,
   "release_id" BLOB NOT NULL,
   "blob_path" TEXT NOT NULL,
   "created" REAL,
   "variant" TEXT NOT NULL DEFAULT '',
   PRIMARY KEY ("fleet", "name", "version", "variant")
);
CREATE TABLE "rollouts" (
   "fleet" TEXT,
   "name" TEXT,
   "version" INTEGER,
   "base" INTEGER,
   "selector" TEXT,
   "stages" TEXT,
   "soak" REAL,
   "max_failure_rate" REAL,
   "max_error_rate" REAL,
   "max_p95_ms" REAL,
   "max_p95_ratio" REAL,
   "rate" REAL,
   "stage_timeout" REAL,
   "state" TEXT,
   "stage" INTEGER,
   "ppm" INTEGER,
   "stage_ppms" TEXT,
   "stage_started" REAL,
   "soak_started" REAL,
   "reason" TEXT,
   "created" REAL,
   "updated" REAL,
   "gate_report" TEXT,
   "rev" INTEGER,
   "synced" INTEGER,
   "max_drift" REAL,
   PRIMARY KEY ("fleet", "name", "version")
);
CREATE TABLE "variant_rules" (
   "fleet" TEXT,
   "name" TEXT,
   "rules" TEXT,
   "default_variant" TEXT,
   PRIMARY KEY ("fleet", "name")
);
CREATE INDEX "drift_age"
    ON "drift" ("fleet", "received_at");
CREATE UNIQUE INDEX "drift_identity"
    ON "drift" ("fleet", "device", "boot", "seq");
CREATE INDEX "drift_ts"
    ON "drift" ("fleet", "ts");
CREATE INDEX "events_age"
    ON "events" ("fleet", "received_at");
CREATE UNIQUE INDEX "events_identity"
    ON "events" ("fleet", "device", "boot", "seq");
CREATE INDEX "events_kind"
    ON "events" ("fleet", "event", "ts");
CREATE INDEX "metrics_age"
    ON "metrics" ("fleet", "received_at");
CREATE UNIQUE INDEX "metrics_identity"
    ON "metrics" ("fleet", "device", "boot", "seq");
CREATE INDEX "metrics_latest"
    ON "metrics" ("fleet", "device", "ts");
CREATE INDEX "metrics_window"
    ON "metrics" ("fleet", "ts", "device", "active");
CREATE INDEX "model_metrics_age"
    ON "model_metrics" ("fleet", "received_at");
CREATE INDEX "model_metrics_health"
    ON "model_metrics" ("fleet", "ts", "model", "version", "device", "inferences", "errors", "latency_p95_ms");
CREATE UNIQUE INDEX "model_metrics_identity"
    ON "model_metrics" ("fleet", "device", "boot", "seq", "model", "version");
