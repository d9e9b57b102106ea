"""Validation at the door (issue 14, point 4): bad manifests are refused by the real apiserver
at `kubectl apply`, each with a message that names the field.

Every row is one mistake in an otherwise valid McpServer, McpPortal or McpPolicy: every CEL
rule of the CRDs (`x-kubernetes-validations`), every enum, a wrong DLP detector name, remote and
deployment both set, bad label selectors, out-of-range limits and bad patterns. The rows'
starting points are applied first and must be accepted, so a refusal is the row's mistake and
nothing else. `test_every_cel_rule_and_enum_of_the_crds_has_a_row` reads the installed CRDs
and fails when a rule or an enum has no row here.
"""

from __future__ import annotations

import copy
import json
import re
from typing import Any

import pytest

API = "portcullis.dev/v1alpha1"


def server(name: str = "s", **spec: Any) -> dict[str, Any]:
    return {"apiVersion": API, "kind": "McpServer", "metadata": {"name": name},
            "spec": spec or {"remote": {"url": "http://127.0.0.1:9/mcp"}}}


def portal(name: str = "p", **spec: Any) -> dict[str, Any]:
    return {"apiVersion": API, "kind": "McpPortal", "metadata": {"name": name},
            "spec": spec or {"public": True, "servers": {"names": ["s"]}}}


def policy(name: str = "pol", **spec: Any) -> dict[str, Any]:
    return {"apiVersion": API, "kind": "McpPolicy", "metadata": {"name": name},
            "spec": spec or {"rules": [{"tools": ["*"]}]}}


REMOTE = {"url": "http://127.0.0.1:9/mcp"}
DEPLOYED = {"image": "ghcr.io/example/mcp:1", "command": ["mcp-server"]}
DLP = {"name": "cards", "detectors": ["creditCard"]}
INSPECT = {"name": "injection", "detectors": ["promptInjection"]}
SELECTOR_IN = {"key": "team", "operator": "In", "values": ["a"]}
LLM_T = {"provider": "openAICompatible", "baseUrl": "http://127.0.0.1:9700/v1", "model": "m"}


def llm_portal(*routes: dict[str, Any], **llm: Any) -> dict[str, Any]:
    return portal(public=True, llm={"routes": list(routes), **llm})


DAY = {"calendar": "day"}
BUDGET = {"name": "daily", "tokens": 2000, "window": DAY}


def budget(**fields: Any) -> dict[str, Any]:
    return policy(budgets=[{**BUDGET, **fields}])

# (id, manifest, the field path the apiserver's message must name, what the row breaks)
BAD: list[tuple[str, dict[str, Any], str, str]] = [
    # --- CEL rules (x-kubernetes-validations) ---
    ("server-remote-and-deployment", server(remote=REMOTE, deployment=DEPLOYED), "spec",
     "cel: set exactly one of remote and deployment"),
    ("server-neither-remote-nor-deployment", server(prefix="x"), "spec",
     "cel: set exactly one of remote and deployment"),
    ("portal-without-auth-or-public", portal(servers={"names": ["s"]}), "spec.auth",
     "cel: set auth, or public: true"),
    ("header-value-and-value-from", server(remote={**REMOTE, "headers": [
        {"name": "X-Key", "value": "a", "valueFrom": {"name": "k", "key": "v"}}]}),
     "spec.remote.headers[0]", "cel: set exactly one of value and valueFrom"),
    ("header-host", server(remote={**REMOTE, "headers": [{"name": "Host", "value": "evil"}]}),
     "spec.remote.headers[0].name", "cel: the Host header cannot be set"),
    ("env-value-and-value-from", server(deployment={**DEPLOYED, "env": [
        {"name": "A", "value": "a", "valueFrom": {"name": "k", "key": "v"}}]}),
     "spec.deployment.env[0]", "cel: set at most one of value and valueFrom"),
    ("inspection-topics-detector-without-topics", policy(inspection=[{"name": "r", "detectors": ["topics"]}]),
     "spec.inspection[0]", "cel: set topics exactly when detectors lists topics"),
    ("inspection-topics-without-the-detector", policy(inspection=[{**INSPECT, "topics": [
        {"name": "t", "phrases": ["merger"]}]}]),
     "spec.inspection[0]", "cel: set topics exactly when detectors lists topics"),
    ("subject-user-and-group", policy(subjects=[{"user": "a", "group": "b"}]),
     "spec.subjects[0]", "cel: set exactly one selector field"),
    ("stdio-without-command", server(deployment={"image": "i"}),
     "spec.deployment", "cel: a stdio server needs command"),
    ("port-on-stdio", server(deployment={**DEPLOYED, "port": 8080}),
     "spec.deployment", "cel: port and path apply only to transport http"),
    ("dlp-rule-without-detectors-or-patterns", policy(dlp=[{"name": "empty"}]),
     "spec.dlp[0]", "cel: set detectors or patterns"),
    ("code-mode-cpu-over-wall", portal(public=True, codeMode={"cpuMs": 5000, "wallMs": 1000}),
     "spec.codeMode.cpuMs", "cel: cpuMs must not exceed wallMs"),
    ("selector-in-without-values", portal(public=True, servers={"selector": {"matchExpressions": [
        {"key": "team", "operator": "In"}]}}),
     "spec.servers.selector.matchExpressions[0].values", "cel: In and NotIn need at least one value"),
    ("selector-exists-with-values", portal(public=True, servers={"selector": {"matchExpressions": [
        {"key": "team", "operator": "Exists", "values": ["a"]}]}}),
     "spec.servers.selector.matchExpressions[0].values", "cel: Exists takes no values"),
    ("llm-weight-on-a-failover-route", llm_portal({"alias": "fast", "targets": [{**LLM_T, "weight": 2}]}),
     "spec.llm.routes[0].targets", "cel: weight applies only to a route with strategy: weighted"),
    ("llm-compatible-target-without-base-url",
     llm_portal({"alias": "fast", "targets": [{"provider": "openAICompatible", "model": "m"}]}),
     "spec.llm.routes[0].targets[0].baseUrl", "cel: azureOpenAI and openAICompatible targets need a baseUrl"),
    ("llm-openai-target-without-key", llm_portal({"alias": "fast", "targets": [{"provider": "openai", "model": "m"}]}),
     "spec.llm.routes[0].targets[0].apiKeyFrom", "cel: openai, anthropic and azureOpenAI targets need an apiKeyFrom"),
    # --- enums ---
    ("detector-phone-number", policy(dlp=[{"name": "pii", "detectors": ["email", "phoneNumber"]}]),
     "spec.dlp[0].detectors[1]", "enum: the operator's old name for phone"),
    ("detector-ip-address", policy(dlp=[{"name": "pii", "detectors": ["ipAddress"]}]),
     "spec.dlp[0].detectors[0]", "enum: the operator's old name for ipv4"),
    ("selector-operator", portal(public=True, servers={"selector": {"matchExpressions": [
        {"key": "team", "operator": "Equals", "values": ["a"]}]}}),
     "spec.servers.selector.matchExpressions[0].operator", "enum: In, NotIn, Exists, DoesNotExist"),
    ("rule-effect", policy(rules=[{"effect": "Permit"}]), "spec.rules[0].effect", "enum: Allow, Deny"),
    ("rule-access", policy(rules=[{"access": "admin"}]), "spec.rules[0].access", "enum: read, write"),
    ("dlp-direction", policy(dlp=[{**DLP, "direction": "inbound"}]), "spec.dlp[0].direction",
     "enum: arguments, results, both"),
    ("dlp-action", policy(dlp=[{**DLP, "action": "quarantine"}]), "spec.dlp[0].action",
     "enum: log, redact, block"),
    ("inspection-detector", policy(inspection=[{"name": "r", "detectors": ["promptInjection", "jailbreak"]}]),
     "spec.inspection[0].detectors[1]", "enum: promptInjection, toolPoisoning, topics"),
    ("inspection-direction", policy(inspection=[{**INSPECT, "direction": "inbound"}]),
     "spec.inspection[0].direction", "enum: arguments, results, both"),
    ("inspection-action", policy(inspection=[{**INSPECT, "action": "redact"}]),
     "spec.inspection[0].action", "enum: log, flag, block"),
    ("remote-transport", server(remote={**REMOTE, "transport": "websocket"}),
     "spec.remote.transport", "enum: streamableHttp, sse"),
    ("deployment-transport", server(deployment={**DEPLOYED, "transport": "grpc"}),
     "spec.deployment.transport", "enum: stdio, http"),
    ("pinning-on-change", server(remote=REMOTE, pinning={"onChange": "Ignore"}),
     "spec.pinning.onChange", "enum: Allow, Alert, Quarantine"),
    ("screening-action", server(remote=REMOTE, screening={"action": "Drop"}),
     "spec.screening.action", "enum: Allow, Alert, Quarantine"),
    ("audit-on-failure", portal(public=True, audit={"onFailure": "ignore"}), "spec.audit.onFailure",
     "enum: failClosed, failOpen"),
    ("llm-provider", llm_portal({"alias": "fast", "targets": [{**LLM_T, "provider": "gemini"}]}),
     "spec.llm.routes[0].targets[0].provider", "enum: openai, anthropic, azureOpenAI, openAICompatible"),
    ("llm-strategy", llm_portal({"alias": "fast", "strategy": "random", "targets": [LLM_T]}),
     "spec.llm.routes[0].strategy", "enum: failover, weighted"),
    ("llm-duplicate-alias", llm_portal({"alias": "fast", "targets": [LLM_T]}, {"alias": "fast", "targets": [LLM_T]}),
     "spec.llm.routes[1]", "list-map: aliases are unique"),
    ("llm-alias-pattern", llm_portal({"alias": "gpt 4", "targets": [LLM_T]}),
     "spec.llm.routes[0].alias", "pattern: [A-Za-z0-9_.-]"),
    ("llm-target-timeout", llm_portal({"alias": "fast", "targets": [{**LLM_T, "timeoutSeconds": 0}]}),
     "spec.llm.routes[0].targets[0].timeoutSeconds", "range: 1-600"),
    ("llm-no-targets", llm_portal({"alias": "fast", "targets": []}),
     "spec.llm.routes[0].targets", "length: 1-8 targets"),
    ("policy-model-glob", policy(models=["gpt 4"]), "spec.models[0]", "pattern: glob syntax"),
    ("budget-without-tokens-or-cost", policy(budgets=[{"name": "b", "window": DAY}]),
     "spec.budgets[0]", "cel: set tokens or cost"),
    ("budget-group-scope-without-group", budget(scope="group"),
     "spec.budgets[0].group", "cel: group is required with scope group"),
    ("budget-group-on-a-user-budget", budget(group="finance"),
     "spec.budgets[0].group", "cel: group applies only to scope group"),
    ("budget-window-calendar-and-rolling", budget(window={"calendar": "day", "rollingSeconds": 3600}),
     "spec.budgets[0].window", "cel: set exactly one of calendar and rollingSeconds"),
    ("budget-window-empty", budget(window={}),
     "spec.budgets[0].window", "cel: set exactly one of calendar and rollingSeconds"),
    ("budget-scope", budget(scope="team"), "spec.budgets[0].scope", "enum: user, group, portal"),
    ("budget-enforcement", budget(enforcement="strict"), "spec.budgets[0].enforcement", "enum: hard, soft"),
    ("budget-calendar", budget(window={"calendar": "week"}), "spec.budgets[0].window.calendar",
     "enum: day, month"),
    ("budget-store-on-unavailable", llm_portal({"alias": "fast", "targets": [LLM_T]},
                                               budgetStore={"onUnavailable": "ignore"}),
     "spec.llm.budgetStore.onUnavailable", "enum: failClosed, failOpen"),
    ("budget-duplicate-name", policy(budgets=[BUDGET, BUDGET]), "spec.budgets[1]", "list-map: names are unique"),
    ("budget-name", budget(name="Daily"), "spec.budgets[0].name", "pattern: [a-z0-9-]"),
    ("budget-cost", budget(cost="$5"), "spec.budgets[0].cost", "pattern: a decimal amount"),
    ("budget-model-glob", budget(models=["gpt 4"]), "spec.budgets[0].models[0]", "pattern: glob syntax"),
    ("budget-tokens-zero", budget(tokens=0), "spec.budgets[0].tokens", "range: 1-10^12"),
    ("budget-rolling-too-short", budget(window={"rollingSeconds": 59}), "spec.budgets[0].window.rollingSeconds",
     "range: 60-31536000"),
    ("llm-price", llm_portal({"alias": "fast", "targets": [{**LLM_T, "price": {"input": "1,5", "output": "2"}}]}),
     "spec.llm.routes[0].targets[0].price.input", "pattern: a decimal amount"),
    ("llm-price-without-output", llm_portal({"alias": "fast", "targets": [{**LLM_T, "price": {"input": "1"}}]}),
     "spec.llm.routes[0].targets[0].price.output", "required: output"),
    ("budget-redis-without-url", llm_portal({"alias": "fast", "targets": [LLM_T]}, budgetStore={"redis": {}}),
     "spec.llm.budgetStore.redis.urlFrom", "required: urlFrom"),
    ("budget-redis-timeout", llm_portal({"alias": "fast", "targets": [LLM_T]}, budgetStore={
        "redis": {"urlFrom": {"name": "r", "key": "url"}, "timeoutMillis": 5}}),
     "spec.llm.budgetStore.redis.timeoutMillis", "range: 10-10000"),
    ("budget-redis-key-prefix", llm_portal({"alias": "fast", "targets": [LLM_T]}, budgetStore={
        "redis": {"urlFrom": {"name": "r", "key": "url"}, "keyPrefix": "a b"}}),
     "spec.llm.budgetStore.redis.keyPrefix", "pattern: [A-Za-z0-9:_.-]"),
    ("rate-limit-store-on-unavailable", portal(public=True, rateLimitStore={
        "redis": {"urlFrom": {"name": "r", "key": "url"}}, "onUnavailable": "sometimes"}),
     "spec.rateLimitStore.onUnavailable", "enum: perReplica, failOpen, failClosed"),
    ("rate-limit-store-without-redis", portal(public=True, rateLimitStore={"onUnavailable": "failOpen"}),
     "spec.rateLimitStore.redis", "required: redis"),
    ("rate-limit-store-timeout", portal(public=True, rateLimitStore={
        "redis": {"urlFrom": {"name": "r", "key": "url"}, "timeoutMillis": 20000}}),
     "spec.rateLimitStore.redis.timeoutMillis", "range: 10-10000"),
    ("rate-limit-store-key-prefix", portal(public=True, rateLimitStore={
        "redis": {"urlFrom": {"name": "r", "key": "url"}, "keyPrefix": "a b"}}),
     "spec.rateLimitStore.redis.keyPrefix", "pattern: [A-Za-z0-9:_.-]"),
    # --- ranges ---
    ("policy-calls-per-minute-zero", policy(limits={"callsPerMinute": 0}),
     "spec.limits.callsPerMinute", "range: at least 1"),
    ("policy-burst-too-large", policy(limits={"burst": 2_000_000}), "spec.limits.burst",
     "range: at most 1000000"),
    ("inspection-threshold-too-high", policy(inspection=[{**INSPECT, "threshold": 150}]),
     "spec.inspection[0].threshold", "range: 1-99"),
    ("inspection-threshold-zero", policy(inspection=[{**INSPECT, "threshold": 0}]),
     "spec.inspection[0].threshold", "range: 1-99"),
    ("portal-replicas", portal(public=True, replicas=101), "spec.replicas", "range: 0-100"),
    ("code-mode-memory", portal(public=True, codeMode={"memoryMib": 0}), "spec.codeMode.memoryMib",
     "range: 1-4096"),
    ("code-mode-concurrency", portal(public=True, codeMode={"maxConcurrentCalls": 1000}),
     "spec.codeMode.maxConcurrentCalls", "range: 1-256"),
    ("portal-max-body-bytes", portal(public=True, limits={"maxBodyBytes": 10}),
     "spec.limits.maxBodyBytes", "range: 1024-268435456"),
    ("portal-max-connections", portal(public=True, limits={"maxConnections": 0}),
     "spec.limits.maxConnections", "range: 1-1000000"),
    ("portal-header-read-timeout", portal(public=True, limits={"headerReadTimeoutSeconds": 301}),
     "spec.limits.headerReadTimeoutSeconds", "range: 1-300"),
    ("portal-body-read-timeout", portal(public=True, limits={"bodyReadTimeoutSeconds": 0}),
     "spec.limits.bodyReadTimeoutSeconds", "range: 1-3600"),
    ("portal-max-sessions", portal(public=True, limits={"maxSessions": 0}),
     "spec.limits.maxSessions", "range: 1-1000000"),
    ("portal-session-idle-timeout", portal(public=True, limits={"sessionIdleTimeoutSeconds": 9}),
     "spec.limits.sessionIdleTimeoutSeconds", "range: 10-86400"),
    ("audit-checkpoint-seconds", portal(public=True, audit={"checkpointSeconds": 0}),
     "spec.audit.checkpointSeconds", "range: 1-86400"),
    ("server-timeout", server(remote=REMOTE, timeoutSeconds=0), "spec.timeoutSeconds", "range: 1-3600"),
    ("deployment-port", server(deployment={**DEPLOYED, "transport": "http", "port": 70000}),
     "spec.deployment.port", "range: 1-65535"),
    ("identity-ttl", server(remote=REMOTE, identity={"ttlSeconds": 0}), "spec.identity.ttlSeconds",
     "range: 1-3600"),
    # --- patterns and lengths ---
    ("rule-tool-glob-question-mark", policy(rules=[{"tools": ["get_?"]}]), "spec.rules[0].tools[0]",
     "pattern: globs are [A-Za-z0-9_.-] and *"),
    ("dlp-server-glob-slash", policy(dlp=[{**DLP, "servers": ["team/crm"]}]),
     "spec.dlp[0].servers[0]", "pattern: globs are [A-Za-z0-9_.-] and *"),
    ("dlp-model-glob-space", policy(dlp=[{**DLP, "models": ["gpt 4"]}]),
     "spec.dlp[0].models[0]", "pattern: model alias globs are [A-Za-z0-9_.-] and *"),
    ("inspection-resource-glob-whitespace", policy(inspection=[{**INSPECT, "resources": ["memo://my notes/*"]}]),
     "spec.inspection[0].resources[0]", "pattern: URI globs have no whitespace"),
    ("remote-url-scheme", server(remote={"url": "ftp://example.com/mcp"}), "spec.remote.url",
     "pattern: http(s) URL"),
    ("server-prefix", server(remote=REMOTE, prefix="a b"), "spec.prefix", "pattern: [A-Za-z0-9.-]"),
    ("selector-label-value", portal(public=True, servers={"selector": {"matchLabels": {"team": "a b"}}}),
     "spec.servers.selector.matchLabels.team", "pattern: label value"),
    ("selector-label-key", portal(public=True, servers={"selector": {"matchExpressions": [
        {**SELECTOR_IN, "key": "-team"}]}}),
     "spec.servers.selector.matchExpressions[0].key", "pattern: label key"),
    ("allowed-origin-with-path", portal(public=True, allowedOrigins=["https://example.com/app"]),
     "spec.allowedOrigins[0]", "pattern: scheme://host[:port]"),
    ("subject-empty-user", policy(subjects=[{"user": ""}]), "spec.subjects[0].user", "length: 1-256"),
    ("dlp-rule-empty-name", policy(dlp=[{**DLP, "name": ""}]), "spec.dlp[0].name", "length: 1-128"),
    ("inspection-rule-no-detectors", policy(inspection=[{"name": "r", "detectors": []}]),
     "spec.inspection[0].detectors", "length: at least one detector"),
]

# Access conditions (issue 19): every selector CEL rule under every list that holds selectors.
_SELECTOR_LISTS = [
    ("policy", "subjects"), ("policy", "include"), ("policy", "require"), ("policy", "exclude"),
    ("portal", "access.include"), ("portal", "access.require"), ("portal", "access.exclude"),
    ("policy", "rules[0].include"), ("policy", "rules[0].require"), ("policy", "rules[0].exclude"),
]


def _with_selectors(where: str, lst: str, sels: list[dict[str, Any]], name: str) -> dict[str, Any]:
    if lst.startswith("rules[0]."):
        return policy(name, rules=[{"access": "write", lst.split(".")[1]: sels}])
    if where == "policy":
        return policy(name, **{lst: sels, "rules": [{"tools": ["*"]}]})
    return portal(name, public=True, access={lst.split(".")[1]: sels})


for _where, _lst in _SELECTOR_LISTS:
    _id = f"{_where}-{_lst.replace('.', '-').replace('[0]', '')}"
    BAD += [
        (f"{_id}-two-fields", _with_selectors(_where, _lst, [{"user": "a", "group": "b"}], "two"),
         f"spec.{_lst}[0]", "cel: set exactly one selector field"),
        (f"{_id}-empty-auth-method", _with_selectors(_where, _lst, [{"authMethod": {}}], "am"),
         f"spec.{_lst}[0].authMethod", "cel: set amr, acr or minAcr"),
        (f"{_id}-acr-and-min-acr", _with_selectors(
            _where, _lst, [{"authMethod": {"acr": ["gold"], "minAcr": 2}}], "acr"),
         f"spec.{_lst}[0].authMethod", "cel: acr or minAcr, not both"),
        (f"{_id}-bad-cidr", _with_selectors(_where, _lst, [{"sourceCidrs": ["10.0.0.0/33"]}], "cidr"),
         f"spec.{_lst}[0].sourceCidrs", "cel: an IP address or a CIDR"),
        (f"{_id}-empty-certificate", _with_selectors(_where, _lst, [{"clientCertificate": {}}], "cert"),
         f"spec.{_lst}[0].clientCertificate", "cel: set issuer, subject or san"),
    ]
BAD += [
    ("policy-subjects-and-include", policy(subjects=[{"group": "a"}], include=[{"group": "b"}]),
     "spec.include", "cel: subjects is the older name of include"),
    ("policy-required-and-excluded", policy(require=[{"group": "a"}], exclude=[{"group": "a"}]),
     "spec.exclude", "cel: a selector both required and excluded"),
    ("portal-required-and-excluded", portal(public=True, access={
        "require": [{"emailDomain": "example.com"}], "exclude": [{"emailDomain": "example.com"}]}),
     "spec.access.exclude", "cel: a selector both required and excluded"),
    ("portal-certificate-header-without-trusted-proxies", portal(public=True, access={
        "clientCertificateHeader": "ssl-client-cert"}),
     "spec.access.trustedProxies", "cel: the certificate header needs trusted proxies"),
    ("portal-trusted-proxy-not-a-cidr", portal(public=True, access={"trustedProxies": ["ingress"]}),
     "spec.access.trustedProxies", "cel: an IP address or a CIDR"),
    ("policy-empty-include", policy(include=[]), "spec.include", "length: 1-256 selectors"),
    # Conditions on one tool rule, and the portal's HTTPS listener.
    ("rule-required-and-excluded", policy(rules=[{"access": "write", "require": [{"group": "oncall"}],
                                                  "exclude": [{"group": "oncall"}]}]),
     "spec.rules[0].exclude", "cel: a selector both required and excluded on one rule"),
    ("rule-empty-require", policy(rules=[{"access": "write", "require": []}]),
     "spec.rules[0].require", "length: 1-8 selectors"),
    ("rule-too-many-includes", policy(rules=[{"include": [{"user": f"u{i}"} for i in range(9)]}]),
     "spec.rules[0].include", "length: 1-8 selectors"),
    ("portal-tls-on-the-proxy-port", portal(public=True, tls={
        "port": 8080, "certificateFrom": {"name": "t", "key": "crt"}, "privateKeyFrom": {"name": "t", "key": "key"}}),
     "spec.tls.port", "cel: 8080 and 9090 are the proxy's ports"),
    ("portal-tls-without-a-key", portal(public=True, tls={"certificateFrom": {"name": "t", "key": "crt"}}),
     "spec.tls.privateKeyFrom", "required: the private key"),
    ("policy-email-domain", policy(include=[{"emailDomain": "exa mple.com"}]),
     "spec.include[0].emailDomain", "pattern: a domain name"),
]

GOOD = [
    server(),
    server("deployed", deployment={**DEPLOYED, "env": [{"name": "A", "value": "a"}]}),
    portal(),
    portal("audited", public=True, audit={"keyFrom": {"name": "audit", "key": "key"}, "onFailure": "failOpen",
                                          "checkpointSeconds": 30}),
    portal("by-label", public=True, codeMode={"cpuMs": 1000, "wallMs": 5000},
           servers={"selector": {"matchLabels": {"team": "a"}, "matchExpressions": [
               SELECTOR_IN, {"key": "portcullis.dev/tier", "operator": "Exists"}]}}),
    policy(),
    policy("every-field", subjects=[{"group": "eng"}], rules=[{"tools": ["get_*"], "access": "write"}],
           dlp=[{**DLP, "direction": "arguments", "action": "block", "tools": ["*"]}],
           limits={"callsPerMinute": 60, "burst": 10}),
    policy("access-conditions", include=[{"group": "eng"}, {"emailDomain": "example.com"}],
           require=[{"authMethod": {"amr": ["mfa"]}}, {"authMethod": {"minAcr": 2}},
                    {"sourceCidrs": ["10.0.0.0/8", "192.0.2.7", "2001:db8::/32"]},
                    {"clientCertificate": {"issuer": "CN=Example Device CA,*", "san": "*.devices.example.com"}},
                    {"deviceClaim": {"name": "device_managed", "value": "true"}}],
           exclude=[{"group": "contractors"}], rules=[{"access": "write"}]),
    policy("legacy-subjects", subjects=[{"claim": {"name": "dept", "value": "x"}}]),
    policy("rule-conditions", include=[{"group": "eng"}], rules=[
        {"access": "read"},
        {"access": "write", "require": [{"clientCertificate": {"issuer": "CN=Example Device CA,*"}},
                                        {"authMethod": {"amr": ["mfa"]}}, {"sourceCidrs": ["10.0.0.0/8"]}]},
        {"effect": "Deny", "access": "write", "include": [{"group": "interns"}], "exclude": [{"user": "ivy"}]}],
        models=["fast"]),
    portal("with-tls", public=True, servers={"names": ["s"]}, tls={
        "port": 8443, "certificateFrom": {"name": "tls", "key": "tls.crt"},
        "privateKeyFrom": {"name": "tls", "key": "tls.key"}, "clientCaFrom": {"name": "tls", "key": "ca.crt"}}),
    portal("gated", public=True, servers={"names": ["s"]}, access={
        "include": [{"group": "finance"}], "require": [{"authMethod": {"acr": ["gold"]}}],
        "exclude": [{"sourceCidrs": ["192.0.2.0/24"]}],
        "trustedProxies": ["127.0.0.1/32", "10.0.0.0/8"], "clientCertificateHeader": "ssl-client-cert"}),
    policy("inspection", inspection=[
        {**INSPECT, "detectors": ["promptInjection", "toolPoisoning"], "direction": "results",
         "servers": ["wiki-*"], "threshold": 70, "action": "flag"},
        {"name": "deals", "detectors": ["topics"], "topics": [{"name": "m", "phrases": ["merger"]}],
         "action": "block", "shadow": True}]),
    portal("with-llm", public=True, llm={"routes": [
        {"alias": "fast", "targets": [{**LLM_T, "apiKeyFrom": {"name": "k", "key": "openai"}},
                                      {"provider": "anthropic", "model": "c", "apiKeyFrom": {"name": "k", "key": "a"}}]},
        {"alias": "spread", "strategy": "weighted", "targets": [{**LLM_T, "weight": 3}, {**LLM_T, "model": "n"}]}]}),
    policy("models", subjects=[{"group": "eng"}], models=["fast", "claude-*"]),
    policy("budgets", include=[{"group": "finance"}], models=["fast"], budgets=[
        BUDGET,
        {"name": "team-money", "scope": "group", "group": "finance", "cost": "25.50", "models": ["gpt-*"],
         "window": {"calendar": "month"}, "enforcement": "soft"},
        {"name": "everyone", "scope": "portal", "tokens": 1_000_000, "window": {"rollingSeconds": 3600}}]),
    portal("with-budget-store", public=True, llm={
        "routes": [{"alias": "fast", "targets": [{**LLM_T, "price": {"input": "0.15", "output": "0.60",
                                                                        "cachedInput": "0.075"}}]}],
        "budgetStore": {"redis": {"urlFrom": {"name": "redis", "key": "url"}, "keyPrefix": "pc:",
                                  "timeoutMillis": 250}, "onUnavailable": "failOpen"}}),
    portal("with-rate-limit-store", public=True, rateLimitStore={
        "redis": {"urlFrom": {"name": "redis", "key": "url"}, "keyPrefix": "rl:", "timeoutMillis": 100},
        "onUnavailable": "failClosed"}),
]


def apply(cluster: Any, namespace: str, doc: dict[str, Any], check: bool):
    return cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(doc), check=check)


def test_the_rows_starting_points_are_accepted(cluster: Any, operator: Any, namespace: str) -> None:
    for doc in GOOD:
        apply(cluster, namespace, doc, check=True)


@pytest.mark.parametrize("row", BAD, ids=[r[0] for r in BAD])
def test_a_bad_manifest_is_refused_at_kubectl_apply_naming_the_field(
    cluster: Any, operator: Any, namespace: str, row: tuple[str, dict[str, Any], str, str]
) -> None:
    _, doc, field, why = row
    p = apply(cluster, namespace, copy.deepcopy(doc), check=False)
    assert p.returncode != 0, f"the apiserver accepted a manifest that breaks {why}: {p.stdout}"
    assert field in p.stderr, f"the refusal ({why}) does not name {field}:\n{p.stderr}"
    assert "is invalid" in p.stderr, p.stderr
    kind = doc["kind"].lower()
    name = doc["metadata"]["name"]
    got = cluster.kubectl("get", kind, name, "-n", namespace, "--ignore-not-found", "-o", "name")
    assert got.stdout.strip() == "", f"{kind}/{name} was stored although refused"


def test_every_cel_rule_and_enum_of_the_crds_has_a_row(cluster: Any, operator: Any) -> None:
    """A rule or enum added to the CRDs without a row here fails this test."""
    found: list[tuple[str, str, str]] = []
    for crd in ("mcpservers", "mcpportals", "mcppolicies"):
        obj = json.loads(cluster.kubectl("get", "crd", f"{crd}.portcullis.dev", "-o", "json").stdout)
        schema = obj["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        kind = obj["spec"]["names"]["kind"]
        for what, path in _walk(schema["properties"]["spec"], "spec"):
            found.append((kind, what, path))
    rules = [f for f in found if f[1] == "cel"]
    enums = [f for f in found if f[1] == "enum"]
    assert len(rules) >= 11 and len(enums) >= 10, found

    def rows(what: str) -> list[tuple[str, str]]:
        return [(r[1]["kind"], _strip_indexes(r[2])) for r in BAD if r[3].startswith(what + ":")]

    cel_rows = rows("cel")
    missing = [f for f in rules if not any(k == f[0] and p.startswith(f[2]) for k, p in cel_rows)]
    assert not missing, f"CEL rules without a row: {missing}"
    enum_rows = rows("enum")
    missing = [f for f in enums if (f[0], f[2]) not in enum_rows]
    assert not missing, f"enums without a row: {missing}"


def _walk(schema: dict[str, Any], path: str) -> list[tuple[str, str]]:
    """("cel" | "enum", dotted path without list indexes): one per CEL rule and per enum under
    schema."""
    out = [("cel", path) for _ in schema.get("x-kubernetes-validations", [])]
    if "enum" in schema:
        out.append(("enum", path))
    for k, child in schema.get("properties", {}).items():
        out += _walk(child, f"{path}.{k}")
    if "items" in schema:
        out += _walk(schema["items"], path)
    return out


def _strip_indexes(path: str) -> str:
    return re.sub(r"\[\d+\]", "", path)
