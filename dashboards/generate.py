#!/usr/bin/env python3
"""Writes roomcast's Grafana dashboards (dashboards/*.json) from the panel lists below.

The JSON files are committed (Grafana provisioning reads them); this script is their
source. `python3 dashboards/generate.py --check` fails when a JSON file differs from
what the script writes (the test command runs it). Every panel expression is also run
against a real Prometheus scraping roomcast (tests/e2e/prometheus.rs), with
`$__rate_interval` as 1m and the `$instance` / `$node` variables as `.*`.

Conventions: every query filters `instance=~"$instance"`; `$node` narrows the instance
list (instances come from `roomcast_node_info{node=~"$node"}`); units are set on every
panel; rates use `$__rate_interval`.
"""
import json
import pathlib
import sys

HERE = pathlib.Path(__file__).resolve().parent
SEL = 'instance=~"$instance"'
RI = "$__rate_interval"


def rate(metric, by=None, extra=""):
    sel = SEL + ("," + extra if extra else "")
    inner = f"rate({metric}{{{sel}}}[{RI}])"
    return f"sum by ({by}) ({inner})" if by else f"sum({inner})"


def quantile(q, metric, by=None):
    labels = "le" if not by else f"{by}, le"
    return (
        f"histogram_quantile({q}, sum by ({labels}) "
        f"(rate({metric}_bucket{{{SEL}}}[{RI}])))"
    )


def ts(title, targets, unit="short", thresholds=None, desc=""):
    """A time-series panel; `targets` is a list of (expr, legend)."""
    steps = [{"color": "green", "value": None}]
    for value, color in thresholds or []:
        steps.append({"color": color, "value": value})
    return {
        "type": "timeseries",
        "title": title,
        "description": desc,
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "fieldConfig": {
            "defaults": {
                "unit": unit,
                "thresholds": {"mode": "absolute", "steps": steps},
                "custom": {
                    "thresholdsStyle": {"mode": "line" if thresholds else "off"}
                },
            },
            "overrides": [],
        },
        "options": {
            "legend": {"displayMode": "list", "placement": "bottom"},
            "tooltip": {"mode": "multi"},
        },
        "targets": [
            {
                "datasource": {"type": "prometheus", "uid": "${datasource}"},
                "expr": expr,
                "legendFormat": legend,
                "refId": chr(ord("A") + i),
            }
            for i, (expr, legend) in enumerate(targets)
        ],
    }


def stat(title, expr, unit, thresholds, desc=""):
    p = ts(title, [(expr, title)], unit, thresholds, desc)
    p["type"] = "stat"
    p["options"] = {"reduceOptions": {"calcs": ["lastNotNull"]}, "colorMode": "value"}
    return p


def dashboard(uid, title, panels, desc):
    laid = []
    for i, p in enumerate(panels):
        p = dict(p)
        p["id"] = i + 1
        p["gridPos"] = {"h": 8, "w": 12, "x": (i % 2) * 12, "y": (i // 2) * 8}
        laid.append(p)
    return {
        "uid": uid,
        "title": title,
        "description": desc,
        "tags": ["roomcast"],
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "timezone": "browser",
        "refresh": "30s",
        "time": {"from": "now-1h", "to": "now"},
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Data source",
                    "type": "datasource",
                    "query": "prometheus",
                    "current": {},
                },
                {
                    "name": "node",
                    "label": "Node",
                    "type": "query",
                    "datasource": {"type": "prometheus", "uid": "${datasource}"},
                    "query": {"query": "label_values(roomcast_node_info, node)", "refId": "node"},
                    "definition": "label_values(roomcast_node_info, node)",
                    "includeAll": True,
                    "allValue": ".*",
                    "multi": True,
                    "refresh": 2,
                    "current": {"text": "All", "value": "$__all"},
                },
                {
                    "name": "instance",
                    "label": "Instance",
                    "type": "query",
                    "datasource": {"type": "prometheus", "uid": "${datasource}"},
                    "query": {
                        "query": 'label_values(roomcast_node_info{node=~"$node"}, instance)',
                        "refId": "instance",
                    },
                    "definition": 'label_values(roomcast_node_info{node=~"$node"}, instance)',
                    "includeAll": True,
                    "allValue": ".*",
                    "multi": True,
                    "refresh": 2,
                    "current": {"text": "All", "value": "$__all"},
                },
            ]
        },
        "annotations": {"list": []},
        "panels": laid,
    }


OVERVIEW = [
    ts("Connections", [(f"sum by (instance) (roomcast_connections{{{SEL}}})", "{{instance}}")]),
    ts("Connects per second", [(rate("roomcast_connects_total", "instance"), "{{instance}}")], "ops"),
    ts("Disconnects by reason", [(rate("roomcast_disconnects_total", "reason"), "{{reason}}")], "ops",
       desc="1012 shutdown/cut_off and 1013 slow_consumer mean clients reconnect."),
    ts("Connections refused before the upgrade", [
        (rate("roomcast_connect_rejected_total", "reason"), "{{reason}}"),
        (rate("roomcast_auth_failures_total", "reason"), "auth: {{reason}}"),
    ], "ops"),
    ts("Messages per second", [
        (rate("roomcast_messages_published_total"), "published"),
        (rate("roomcast_messages_delivered_total"), "frames delivered"),
        (rate("roomcast_messages_stored_total"), "stored"),
    ], "ops"),
    ts("Delivery latency", [
        (quantile(0.5, "roomcast_delivery_latency_seconds"), "p50"),
        (quantile(0.99, "roomcast_delivery_latency_seconds"), "p99"),
    ], "s", [(0.05, "yellow"), (0.25, "red")],
       "From a frame entering the server to its socket write. Objective: p99 under 250 ms."),
    ts("Errors by code", [
        (rate("roomcast_client_errors_total", "code"), "socket: {{code}}"),
        (rate("roomcast_api_errors_total", "code"), "REST: {{code}}"),
    ], "ops"),
    ts("Rate limits and moderation", [
        (rate("roomcast_rate_limited_total", "limit"), "rate limited: {{limit}}"),
        (rate("roomcast_moderation_actions_total", "action"), "moderation: {{action}}"),
        (rate("roomcast_typing_dropped_total"), "typing dropped"),
    ], "ops"),
    ts("REST requests by route and status", [
        (rate("roomcast_http_requests_total", "route, status"), "{{route}} {{status}}"),
    ], "reqps"),
    ts("REST latency p99 by route", [
        (quantile(0.99, "roomcast_http_request_duration_seconds", "route"), "{{route}}"),
    ], "s", [(0.25, "yellow"), (1, "red")]),
    ts("Messages per second by room (watched rooms)", [
        (f"topk(10, {rate('roomcast_room_messages_published_total', 'room')})", "{{room}}"),
    ], "ops", desc="Only the rooms named in ROOMCAST_METRICS_ROOMS have a series (bounded cardinality); the ten busiest of them."),
]

FANOUT = [
    ts("Shard queue depth", [(f"max by (instance, shard) (roomcast_shard_queue_depth{{{SEL}}})", "{{instance}} shard {{shard}}")],
       "short", [(1000, "yellow"), (10000, "red")]),
    ts("Rooms with members", [(f"sum by (instance) (roomcast_rooms{{{SEL}}})", "{{instance}}")]),
    ts("Outbox bytes queued at a write", [
        (quantile(0.5, "roomcast_outbox_queued_bytes"), "p50"),
        (quantile(0.99, "roomcast_outbox_queued_bytes"), "p99"),
    ], "bytes", [(262144, "yellow"), (1048576, "red")], "The outbox cap (ROOMCAST_OUTBOX_MAX_BYTES, 1 MiB) closes the connection with 1013."),
    ts("Slow-consumer disconnects", [(rate("roomcast_slow_consumer_disconnects_total", "instance"), "{{instance}}")], "ops", [(1, "red")]),
    ts("Frames per socket write", [
        (quantile(0.5, "roomcast_write_batch_frames"), "p50"),
        (quantile(0.99, "roomcast_write_batch_frames"), "p99"),
    ]),
    ts("History commit latency and batch size", [
        (quantile(0.99, "roomcast_store_write_seconds"), "commit p99"),
        (quantile(0.5, "roomcast_store_write_seconds"), "commit p50"),
    ], "s", [(0.1, "yellow"), (1, "red")]),
    ts("Writer queue", [
        (f"max by (instance) (roomcast_writer_queue_depth{{{SEL}}})", "{{instance}} queued"),
        (f"max by (instance) (roomcast_writer_queue_capacity{{{SEL}}})", "{{instance}} capacity"),
    ]),
    ts("Recovery replays", [
        (rate("roomcast_recoveries_total", "outcome"), "joins with since: {{outcome}}"),
        (rate("roomcast_recovered_messages_total"), "messages replayed"),
        (rate("roomcast_recovery_reads_total"), "store reads"),
    ], "ops"),
]

STORAGE = [
    ts("Store operation latency p99 by backend and op", [
        (quantile(0.99, "roomcast_store_operation_seconds", "backend, op"), "{{backend}} {{op}}"),
    ], "s", [(0.1, "yellow"), (1, "red")], "Every history operation, whoever calls it (writer, gap fills, recovery, REST)."),
    ts("Store errors and timeouts by op", [
        (rate("roomcast_store_operation_errors_total", "backend, op, kind"), "{{backend}} {{op}} {{kind}}"),
    ], "ops", [(0.01, "red")], "kind=timeout: no answer in time (a write may still land); kind=error: anything else."),
    ts("Store write latency (group commit)", [
        (quantile(0.5, "roomcast_store_write_seconds"), "p50"),
        (quantile(0.99, "roomcast_store_write_seconds"), "p99"),
    ], "s", [(0.1, "yellow"), (1, "red")]),
    ts("Store read latency (history pages)", [
        (quantile(0.5, "roomcast_store_read_seconds"), "p50"),
        (quantile(0.99, "roomcast_store_read_seconds"), "p99"),
    ], "s", [(0.1, "yellow"), (1, "red")]),
    ts("Store errors (failed commits, each retry counted)", [(rate("roomcast_store_errors_total", "instance"), "{{instance}}")], "ops", [(0.01, "red")]),
    ts("Records per commit", [
        (quantile(0.5, "roomcast_store_batch_size"), "p50"),
        (quantile(0.99, "roomcast_store_batch_size"), "p99"),
    ]),
    ts("Messages stored", [(rate("roomcast_messages_stored_total", "instance"), "{{instance}}")], "ops"),
    ts("Room position reads", [(rate("roomcast_room_position_loads_total", "outcome"), "{{outcome}}")], "ops"),
]

CLUSTER = [
    ts("Live nodes (as each node sees them)", [(f"max by (instance) (roomcast_cluster_nodes{{{SEL}}})", "{{instance}}")]),
    ts("Room slots held", [(f"max by (instance) (roomcast_cluster_slots_owned{{{SEL}}})", "{{instance}}")]),
    ts("Bus publish and receive", [
        (rate("roomcast_bus_published_total", "instance"), "{{instance}} published"),
        (rate("roomcast_bus_received_total", "instance"), "{{instance}} received"),
    ], "ops"),
    ts("Gaps, fills and duplicates", [
        (rate("roomcast_bus_gaps_total", "instance"), "{{instance}} gaps"),
        (rate("roomcast_bus_gap_filled_messages_total", "instance"), "{{instance}} messages filled"),
        (rate("roomcast_bus_fill_failed_total", "instance"), "{{instance}} fills failed"),
        (rate("roomcast_bus_duplicates_total", "instance"), "{{instance}} duplicates dropped"),
    ], "ops"),
    ts("Ownership moves", [(rate("roomcast_cluster_slot_moves_total", "change"), "{{change}}")], "ops"),
    ts("Redis: lease rounds, reconnects, subscriber", [
        (rate("roomcast_cluster_lease_rounds_total", "outcome"), "rounds {{outcome}}"),
        (rate("roomcast_bus_redis_reconnects_total", "reason"), "reconnect: {{reason}}"),
        (f"min by (instance) (roomcast_bus_redis_connected{{{SEL}}})", "{{instance}} subscriber up"),
    ]),
    ts("Publishes forwarded to owners", [(rate("roomcast_cluster_forwarded_total", "outcome"), "{{outcome}}")], "ops"),
    ts("Presence updates", [
        (rate("roomcast_presence_updates_total", "change"), "users {{change}}"),
        (rate("roomcast_room_roster_changes_total", "change"), "room members {{change}}"),
    ], "ops"),
    ts("Bus publish queue", [(f"max by (instance) (roomcast_bus_publish_queue_depth{{{SEL}}})", "{{instance}}")],
       "short", [(1000, "red")]),
]

SLO = [
    stat("Delivery: share within 250 ms (1h)", "1 - job:roomcast_delivery_slow:ratio_rate1h", "percentunit",
         [(0.99, "green")], "Objective 99 %. Recording rules in deploy/prometheus/roomcast.rules.yml."),
    ts("Delivery error-budget burn rate", [
        ("job:roomcast_delivery_slow:ratio_rate5m / 0.01", "5m"),
        ("job:roomcast_delivery_slow:ratio_rate1h / 0.01", "1h"),
        ("job:roomcast_delivery_slow:ratio_rate6h / 0.01", "6h"),
    ], "short", [(6, "yellow"), (14.4, "red")], "1 = spending the budget exactly over 30 days; the page fires at 14.4 (5m and 1h), the ticket at 6 (30m and 6h)."),
    stat("Availability: HTTP answered without 5xx (1h)", "1 - job:roomcast_http_errors:ratio_rate1h", "percentunit",
         [(0.999, "green")], "Objective 99.9 %."),
    ts("Availability error-budget burn rate", [
        ("job:roomcast_http_errors:ratio_rate5m / 0.001", "5m"),
        ("job:roomcast_http_errors:ratio_rate1h / 0.001", "1h"),
        ("job:roomcast_http_errors:ratio_rate6h / 0.001", "6h"),
    ], "short", [(6, "yellow"), (14.4, "red")]),
    ts("Delivery p99 (recorded)", [
        ("job:roomcast_delivery_latency_seconds:p99_1m", "p99"),
        ("job:roomcast_delivery_latency_seconds:p50_1m", "p50"),
    ], "s", [(0.25, "red")]),
]

DASHBOARDS = {
    "roomcast-overview.json": dashboard("roomcast-overview", "roomcast / Overview", OVERVIEW,
        "Connections, messages, delivery latency, errors, limits and REST traffic."),
    "roomcast-fanout.json": dashboard("roomcast-fanout", "roomcast / Fan-out internals", FANOUT,
        "Shard queues, outboxes, slow consumers, socket writes, the history writer and recovery."),
    "roomcast-storage.json": dashboard("roomcast-storage", "roomcast / Storage", STORAGE,
        "History store latency, errors and batching (embedded or CQL backend)."),
    "roomcast-cluster.json": dashboard("roomcast-cluster", "roomcast / Cluster", CLUSTER,
        "Many nodes over Redis: membership, slots, bus traffic, gaps, Redis health, presence."),
    "roomcast-slo.json": dashboard("roomcast-slo", "roomcast / SLOs", SLO,
        "Delivery-latency and availability objectives with burn rates."),
}


def main():
    check = "--check" in sys.argv[1:]
    stale = []
    for name, d in DASHBOARDS.items():
        text = json.dumps(d, indent=2, sort_keys=True) + "\n"
        path = HERE / name
        if check:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
        else:
            path.write_text(text)
    if stale:
        print("dashboards out of date (run python3 dashboards/generate.py):", ", ".join(stale))
        sys.exit(1)


if __name__ == "__main__":
    main()
