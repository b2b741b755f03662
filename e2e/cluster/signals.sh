#!/usr/bin/env bash
# The business-signal services of the local harness, on 127.0.0.1:
# a single-node Apache Kafka broker (KRaft: broker and controller in one JVM)
# run from the release's jars on Maven Central, Jaeger v2 built from its
# Go module, with in-memory storage, and (unless METRICS=0) Prometheus and
# Alertmanager built from their Go modules (docs/prometheus.md).
#
#   signals.sh up       fetch/build what is missing, start them, wait until ready
#   signals.sh start    fetch/build what is missing and start them, without waiting
#   signals.sh down     stop them and drop their data
#   signals.sh status   say what runs and how to reach it
#   signals.sh env      print the export line with their addresses
#
# `cluster.sh up` runs this too unless SIGNALS=0. Ports: see e2e/cluster/lib.sh.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
LOG_TAG=signals

# Read by the process helpers of lib.sh (start, running, wait_for, ...).
LOGS=$SIGNALS_DIR/logs
PIDS=$SIGNALS_DIR/pids
KAFKA_STATE=$SIGNALS_DIR/kafka
JAEGER_STATE=$SIGNALS_DIR/jaeger
PROMETHEUS_STATE=$SIGNALS_DIR/prometheus
ALERTMANAGER_STATE=$SIGNALS_DIR/alertmanager
# In start order; `down` stops all of them, whatever METRICS says now.
ALL_SERVICES=(kafka jaeger alertmanager prometheus)
SERVICES=(kafka jaeger)
if [[ $METRICS == 1 ]]; then SERVICES+=(alertmanager prometheus); fi
# The topic the readiness check creates, writes and reads.
CHECK_TOPIC=sre-space.harness-check
CHECK_SERVICE=sre-space-harness-check

ports_of() {
    case $1 in
        kafka) echo "$KAFKA_PORT $KAFKA_CONTROLLER_PORT" ;;
        prometheus) echo "$PROMETHEUS_PORT" ;;
        alertmanager) echo "$ALERTMANAGER_PORT" ;;
        jaeger) echo "$JAEGER_OTLP_GRPC_PORT $JAEGER_OTLP_HTTP_PORT $JAEGER_QUERY_PORT $JAEGER_QUERY_GRPC_PORT $JAEGER_HEALTH_PORT $JAEGER_METRICS_PORT" ;;
    esac
}

# --- fetch and build ---------------------------------------------------------

# The broker's jars: everything kafka_2.13 and kafka-tools need at run time,
# plus the Log4j 2 binding, copied by Maven into the cache. The cache entry is
# keyed by the Kafka version and remembers the pom it was made from, so an
# edited pom is fetched again.
fetch_kafka() {
    local pom=$E2E_DIR/build/kafka/pom.xml sum
    sum=$(sha256sum "$pom" | cut -d' ' -f1)
    [[ -f $KAFKA_HOME/pom.sha256 && $(cat "$KAFKA_HOME/pom.sha256") == "$sum" ]] && return 0
    command -v mvn >/dev/null || die "mvn is not installed (apt-get install maven)"
    log "fetching Kafka $KAFKA_VERSION from Maven Central into $KAFKA_HOME"
    local start=$SECONDS
    rm -rf "$KAFKA_HOME.tmp" && mkdir -p "$KAFKA_HOME.tmp"
    mvn -q -B -Dstyle.color=never -f "$pom" dependency:copy-dependencies -DincludeScope=runtime \
        -DoutputDirectory="$KAFKA_HOME.tmp/libs" >&2
    echo "$sum" >"$KAFKA_HOME.tmp/pom.sha256"
    rm -rf "$KAFKA_HOME" && mv "$KAFKA_HOME.tmp" "$KAFKA_HOME"
    log "fetched Kafka $KAFKA_VERSION ($(ls "$KAFKA_HOME/libs" | wc -l) jars) in $((SECONDS - start)) s"
}

prepare() {
    command -v java >/dev/null || die "java is not installed (Kafka $KAFKA_VERSION needs Java 17 or newer)"
    fetch_kafka
    "$E2E_DIR/cluster/build.sh" jaeger
    if [[ $METRICS == 1 ]]; then "$E2E_DIR/cluster/build.sh" prometheus; fi
}

# --- Kafka -------------------------------------------------------------------

# One JVM runs the broker and the controller; the broker's data and the
# metadata log are dropped by `down`, so every `up` starts from empty.
kafka_config() {
    cat <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:$KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$KAFKA_CONTROLLER_PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$KAFKA_STATE/data
auto.create.topics.enable=true
num.partitions=1
default.replication.factor=1
min.insync.replicas=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
share.coordinator.state.topic.num.partitions=1
group.initial.rebalance.delay.ms=0
PROPS
}

# Log4j 2 configuration: the broker logs INFO to its log file; the command-line
# tools log WARN to stderr, so their stdout holds only what they print.
log4j_config() { # level target
    cat <<PROPS
status = warn
appender.out.type = Console
appender.out.name = out
appender.out.target = $2
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = $1
rootLogger.appenderRef.out.ref = out
logger.state.name = state.change.logger
logger.state.level = WARN
PROPS
}

kafka_java() { # main-class args... (a short-lived tool from the broker's classpath)
    java -Xmx256m -XX:TieredStopAtLevel=1 -Djava.awt.headless=true \
        -Dlog4j2.configurationFile="$KAFKA_STATE/tools-log4j2.properties" \
        -cp "$KAFKA_HOME/libs/*" "$@"
}

start_kafka() {
    running kafka && return 0
    mkdir -p "$KAFKA_STATE"
    rm -rf "$KAFKA_STATE/data"
    kafka_config >"$KAFKA_STATE/server.properties"
    log4j_config INFO SYSTEM_OUT >"$KAFKA_STATE/log4j2.properties"
    log4j_config WARN SYSTEM_ERR >"$KAFKA_STATE/tools-log4j2.properties"
    # KRaft needs its storage formatted with a cluster id before the first
    # start; --standalone makes this node the one voter of the quorum.
    rm -f "$KAFKA_STATE/check-written"
    kafka_java kafka.tools.StorageTool random-uuid | tail -n 1 >"$KAFKA_STATE/cluster-id"
    kafka_java kafka.tools.StorageTool format -t "$(cat "$KAFKA_STATE/cluster-id")" \
        -c "$KAFKA_STATE/server.properties" --standalone >>"$LOGS/kafka.log" 2>&1 ||
        { tail -n 20 "$LOGS/kafka.log" >&2; die "formatting Kafka's storage failed"; }
    launch_kafka
}

# Starts the broker on the storage it already has (start_kafka formats it).
launch_kafka() {
    start kafka java -Xms256m -Xmx"$KAFKA_HEAP" -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
        -Djava.awt.headless=true \
        -Dlog4j2.configurationFile="$KAFKA_STATE/log4j2.properties" \
        -cp "$KAFKA_HOME/libs/*" kafka.Kafka "$KAFKA_STATE/server.properties"
}

# Ready when a topic can be created and a message written to it read back.
# Topic and message are named after this start's cluster id, so a retried
# check, or one against a broker left running, reads exactly what it wrote.
kafka_ready() {
    (exec 3<>"/dev/tcp/127.0.0.1/$KAFKA_PORT") 2>/dev/null || return 1
    local id topic got
    id=$(cat "$KAFKA_STATE/cluster-id")
    topic=$CHECK_TOPIC-$id
    kafka_java org.apache.kafka.tools.TopicCommand --bootstrap-server "127.0.0.1:$KAFKA_PORT" \
        --create --if-not-exists --topic "$topic" --partitions 1 --replication-factor 1 >/dev/null
    if [[ ! -f $KAFKA_STATE/check-written ]]; then
        echo "$id" | kafka_java org.apache.kafka.tools.ConsoleProducer \
            --bootstrap-server "127.0.0.1:$KAFKA_PORT" --topic "$topic" --producer-property acks=all &&
            touch "$KAFKA_STATE/check-written"
    fi
    # Read partition 0 directly (no consumer group to join): faster, and the
    # check leaves no group behind.
    got=$(kafka_java org.apache.kafka.tools.consumer.ConsoleConsumer \
        --bootstrap-server "127.0.0.1:$KAFKA_PORT" --topic "$topic" \
        --partition 0 --offset earliest --max-messages 1 --timeout-ms 15000 2>/dev/null || true)
    [[ $got == "$id" ]]
}

# --- Jaeger ------------------------------------------------------------------

jaeger_config() {
    cat <<YAML
service:
  extensions: [jaeger_storage, jaeger_query, healthcheckv2]
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [jaeger_storage_exporter]
  telemetry:
    resource:
      service.name: jaeger
    metrics:
      level: basic
      readers:
        - pull:
            exporter:
              prometheus:
                host: 127.0.0.1
                port: $JAEGER_METRICS_PORT
    logs:
      level: info

extensions:
  healthcheckv2:
    use_v2: true
    http:
      endpoint: 127.0.0.1:$JAEGER_HEALTH_PORT
  jaeger_storage:
    backends:
      memstore:
        memory:
          max_traces: 100000
  jaeger_query:
    storage:
      traces: memstore
    # Jaeger would otherwise trace its own queries and export them to the
    # default OTLP endpoint (localhost:4317), which is not ours.
    enable_tracing: false
    http:
      endpoint: 127.0.0.1:$JAEGER_QUERY_PORT
    grpc:
      endpoint: 127.0.0.1:$JAEGER_QUERY_GRPC_PORT

receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:$JAEGER_OTLP_GRPC_PORT
      http:
        endpoint: 127.0.0.1:$JAEGER_OTLP_HTTP_PORT

processors:
  batch:
    timeout: 200ms

exporters:
  jaeger_storage_exporter:
    trace_storage: memstore
YAML
}

start_jaeger() {
    running jaeger && return 0
    mkdir -p "$JAEGER_STATE"
    jaeger_config >"$JAEGER_STATE/config.yaml"
    start jaeger "$JAEGER_BIN/jaeger" --config "$JAEGER_STATE/config.yaml"
}

# Ready when a span sent over OTLP/HTTP can be found through the query API.
jaeger_ready() {
    curl -fsS --max-time 2 "http://127.0.0.1:$JAEGER_HEALTH_PORT/status" >/dev/null || return 1
    local trace_id span_id now
    trace_id=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
    span_id=$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')
    now=$(date +%s%N)
    curl -fsS --max-time 5 -H 'Content-Type: application/json' \
        "http://127.0.0.1:$JAEGER_OTLP_HTTP_PORT/v1/traces" -d @- >/dev/null <<JSON || return 1
{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"$CHECK_SERVICE"}}]},
 "scopeSpans":[{"scope":{"name":"signals.sh"},"spans":[{"traceId":"$trace_id","spanId":"$span_id",
 "name":"readiness-check","kind":1,"startTimeUnixNano":"$((now - 1000000))","endTimeUnixNano":"$now"}]}]}]}
JSON
    local _
    for _ in $(seq 1 20); do
        curl -fsS --max-time 2 "http://127.0.0.1:$JAEGER_QUERY_PORT/api/traces?service=$CHECK_SERVICE&limit=100" 2>/dev/null |
            grep -q "\"traceID\":\"$trace_id\"" && return 0
        sleep 0.25
    done
    return 1
}

# --- Prometheus and Alertmanager ---------------------------------------------

# Tests and the demo register scrape targets by dropping a file_sd file into
# targets/ (picked up within a second) and rules by dropping a file into
# rules/ and POSTing /-/reload. A target file named sre-space-operator*.json
# is the operator's own /metrics (job sre-space); any other is a service's
# (job services, unless the file sets a job label).
prometheus_config() {
    cat <<YAML
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
  external_labels:
    harness: sre-space
rule_files:
  - $PROMETHEUS_STATE/rules/*.yml
alerting:
  alertmanagers:
    - static_configs:
        - targets: [127.0.0.1:$ALERTMANAGER_PORT]
scrape_configs:
  - job_name: prometheus
    static_configs:
      - targets: [127.0.0.1:$PROMETHEUS_PORT]
  - job_name: sre-space
    file_sd_configs:
      - files: [$PROMETHEUS_STATE/targets/sre-space-operator*.json]
        refresh_interval: 1s
  - job_name: services
    file_sd_configs:
      - files: [$PROMETHEUS_STATE/targets/*.json]
        refresh_interval: 1s
    relabel_configs:
      - source_labels: [__meta_filepath]
        regex: .*/sre-space-operator[^/]*\.json
        action: drop
YAML
}

# The default receiver is the operator's webhook receiver; a test points it
# elsewhere by rewriting this file and POSTing /-/reload (e2e/src/prometheus.rs
# restores it). Alerts are grouped per workload and cause.
alertmanager_config() { # webhook-url
    cat <<YAML
route:
  receiver: sre-space
  group_by: [alertname, namespace, deployment]
  group_wait: 1s
  group_interval: 2s
  repeat_interval: 1m
receivers:
  - name: sre-space
    webhook_configs:
      - url: $1
        send_resolved: true
        http_config:
          authorization:
            type: Bearer
            credentials_file: $ALERTMANAGER_STATE/token
YAML
}

start_alertmanager() {
    running alertmanager && return 0
    mkdir -p "$ALERTMANAGER_STATE"
    # The bearer token Alertmanager sends the webhook receiver: made once and
    # kept across restarts, so the operator's Secret made from it stays good.
    if [[ ! -s $ALERTMANAGER_STATE/token ]]; then
        (umask 077 && od -An -N32 -tx1 /dev/urandom | tr -d ' \n' >"$ALERTMANAGER_STATE/token")
    fi
    chmod 600 "$ALERTMANAGER_STATE/token"
    rm -rf "$ALERTMANAGER_STATE/data"
    alertmanager_config "$ALERT_WEBHOOK_URL" >"$ALERTMANAGER_STATE/alertmanager.yml"
    # --cluster.listen-address= switches gossip off: one instance, no peers.
    start alertmanager "$ALERTMANAGER_BIN/alertmanager" \
        --config.file "$ALERTMANAGER_STATE/alertmanager.yml" \
        --storage.path "$ALERTMANAGER_STATE/data" \
        --web.listen-address "127.0.0.1:$ALERTMANAGER_PORT" \
        --web.external-url "http://127.0.0.1:$ALERTMANAGER_PORT" \
        --cluster.listen-address= \
        --log.level info
}

start_prometheus() {
    running prometheus && return 0
    mkdir -p "$PROMETHEUS_STATE/targets" "$PROMETHEUS_STATE/rules"
    # Every start begins from empty data, no targets and the repository's
    # rules: a target left by a crashed test points at a dead port.
    rm -rf "$PROMETHEUS_STATE/data" "$PROMETHEUS_STATE"/targets/* "$PROMETHEUS_STATE"/rules/*
    cp "$E2E_DIR"/cluster/prometheus/*.yml "$PROMETHEUS_STATE/rules/"
    prometheus_config >"$PROMETHEUS_STATE/prometheus.yml"
    # Alerts are sent again every 5 s while they fire (default: 1 min), so
    # a restarted Alertmanager hears of them quickly.
    start prometheus "$PROMETHEUS_BIN/prometheus" \
        --config.file "$PROMETHEUS_STATE/prometheus.yml" \
        --storage.tsdb.path "$PROMETHEUS_STATE/data" \
        --storage.tsdb.retention.time 1d \
        --web.listen-address "127.0.0.1:$PROMETHEUS_PORT" \
        --web.external-url "http://127.0.0.1:$PROMETHEUS_PORT" \
        --web.enable-lifecycle \
        --rules.alert.resend-delay 5s \
        --log.level info
}

alertmanager_ready() {
    curl -fsS --max-time 2 "http://127.0.0.1:$ALERTMANAGER_PORT/-/ready" >/dev/null
}

# Ready when Prometheus says so, has loaded the repository's rule, has
# scraped itself, and knows the local Alertmanager.
prometheus_ready() {
    local api=http://127.0.0.1:$PROMETHEUS_PORT
    curl -fsS --max-time 2 "$api/-/ready" >/dev/null || return 1
    curl -fsS --max-time 2 "$api/api/v1/rules" | grep -q '"name":"DemoServiceErrorRate"' || return 1
    curl -fsS --max-time 2 "$api/api/v1/query?query=up%7Bjob%3D%22prometheus%22%7D" | grep -q '"value":\[[0-9.]*,"1"\]' || return 1
    curl -fsS --max-time 2 "$api/api/v1/alertmanagers" | grep -q "127.0.0.1:$ALERTMANAGER_PORT"
}

# --- common ------------------------------------------------------------------

cmd_start() {
    prepare
    mkdir -p "$LOGS" "$PIDS"
    start_jaeger
    if [[ $METRICS == 1 ]]; then
        start_alertmanager
        start_prometheus
    fi
    start_kafka
}

cmd_up() {
    local start_time=$SECONDS
    if status_of "${SERVICES[@]}" >/dev/null && [[ -f $SIGNALS_DIR/ready ]]; then
        log "already running"
        cmd_status
        return 0
    fi
    rm -f "$SIGNALS_DIR/ready"
    cmd_start
    local t=$SECONDS
    wait_for jaeger 60 jaeger_ready
    log "jaeger ready (a trace sent over OTLP found through the query API) in $((SECONDS - t)) s"
    if [[ $METRICS == 1 ]]; then
        t=$SECONDS
        wait_for alertmanager 60 alertmanager_ready
        wait_for prometheus 60 prometheus_ready
        log "prometheus and alertmanager ready (rules loaded, itself scraped, alertmanager known) in $((SECONDS - t)) s"
    fi
    t=$SECONDS
    wait_for kafka 120 kafka_ready
    log "kafka ready (topic $CHECK_TOPIC created, written and read) in $((SECONDS - t)) s"
    touch "$SIGNALS_DIR/ready"
    log "ready in $((SECONDS - start_time)) s"
    cmd_status
}

cmd_down() {
    local i
    for ((i = ${#ALL_SERVICES[@]} - 1; i >= 0; i--)); do
        # Kafka shuts down in order on SIGTERM (a few seconds); give it 30.
        stop_component "${ALL_SERVICES[i]}" 30
    done
    # Alertmanager's token is kept, like the cluster's certificates.
    rm -rf "$KAFKA_STATE/data" "$PROMETHEUS_STATE/data" "$ALERTMANAGER_STATE/data" "$LOGS" "$SIGNALS_DIR/ready"
}

cmd_status() {
    local ok=0
    status_of "${SERVICES[@]}" || ok=1
    if ((ok == 0)); then
        echo "  Kafka $KAFKA_VERSION (KRaft) bootstrap 127.0.0.1:$KAFKA_PORT (controller 127.0.0.1:$KAFKA_CONTROLLER_PORT)"
        echo "  Jaeger $JAEGER_RELEASE OTLP gRPC 127.0.0.1:$JAEGER_OTLP_GRPC_PORT, OTLP HTTP http://127.0.0.1:$JAEGER_OTLP_HTTP_PORT, query http://127.0.0.1:$JAEGER_QUERY_PORT"
        if [[ $METRICS == 1 ]]; then
            echo "  Prometheus $PROMETHEUS_RELEASE http://127.0.0.1:$PROMETHEUS_PORT (targets: $PROMETHEUS_STATE/targets, rules: $PROMETHEUS_STATE/rules)"
            echo "  Alertmanager ${ALERTMANAGER_VERSION#v} http://127.0.0.1:$ALERTMANAGER_PORT (config: $ALERTMANAGER_STATE/alertmanager.yml, webhook token: $ALERTMANAGER_STATE/token)"
        fi
    fi
    return $ok
}

cmd_env() {
    local metrics_env=()
    if [[ $METRICS == 1 ]]; then
        metrics_env=(
            "SRE_SPACE_PROMETHEUS_URL=http://127.0.0.1:$PROMETHEUS_PORT"
            "SRE_SPACE_ALERTMANAGER_URL=http://127.0.0.1:$ALERTMANAGER_PORT"
            "SRE_SPACE_PROMETHEUS_TARGETS_DIR=$PROMETHEUS_STATE/targets"
            "SRE_SPACE_PROMETHEUS_RULES_DIR=$PROMETHEUS_STATE/rules"
            "SRE_SPACE_ALERTMANAGER_CONFIG=$ALERTMANAGER_STATE/alertmanager.yml"
            "SRE_SPACE_ALERTMANAGER_TOKEN_FILE=$ALERTMANAGER_STATE/token"
        )
    fi
    echo "export SRE_SPACE_KAFKA_BOOTSTRAP=127.0.0.1:$KAFKA_PORT" \
        "SRE_SPACE_OTLP_GRPC=http://127.0.0.1:$JAEGER_OTLP_GRPC_PORT" \
        "SRE_SPACE_OTLP_HTTP=http://127.0.0.1:$JAEGER_OTLP_HTTP_PORT" \
        "SRE_SPACE_JAEGER_QUERY=http://127.0.0.1:$JAEGER_QUERY_PORT" \
        ${metrics_env[@]+"${metrics_env[@]}"}
}

# A broker outage, for the tests: stop the broker and start it again on the
# same storage, so topics, offsets and the cluster id survive, as when a
# real broker restarts.
cmd_kafka_stop() {
    stop_component kafka 20
    log "kafka's storage is kept for kafka-start"
}

cmd_kafka_start() {
    running kafka && return 0
    prepare
    launch_kafka
    wait_for kafka 120 kafka_ready
    log "kafka started again on its storage"
}

case ${1:-} in
    up) cmd_up ;;
    kafka-stop) cmd_kafka_stop ;;
    kafka-start) cmd_kafka_start ;;
    start) cmd_start ;;
    down) cmd_down ;;
    status) cmd_status ;;
    env) cmd_env ;;
    *) echo "usage: $0 up|start|down|status|env|kafka-stop|kafka-start" >&2; exit 2 ;;
esac
