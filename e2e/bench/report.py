"""The table printed at the end of a run, from the JSON it writes."""

from __future__ import annotations

def conn_label(n: int, short: bool = False) -> str:
    return f"{n} conn" if short else f"{n} connection{'' if n == 1 else 's'}"


def cpu_row(d: dict, p: dict, n: dict | None) -> str | None:
    """CPU per call of each lane's processes, or None when not measured."""
    if "cpu_us_per_call" not in d or "cpu_us_per_call" not in p:
        return None
    dc, pc = d["cpu_us_per_call"], p["cpu_us_per_call"]
    cpu = f"direct: upstream {dc['upstream']:.0f}; portal: proxy {pc['proxy']:.0f} + upstream {pc['upstream']:.0f}"
    if n and "cpu_us_per_call" in n:
        nc = n["cpu_us_per_call"]
        cpu += f"; nginx: workers {nc['workers']:.0f} + upstream {nc['upstream']:.0f}"
    lanes = [x for x in (d, p, n) if x]
    if all("wrk_cpu_us_per_call" in x for x in lanes):
        cpu += f"; wrk ({'/'.join('dpn'[:len(lanes)])}) " + " / ".join(f"{x['wrk_cpu_us_per_call']:.0f}" for x in lanes)
    return cpu


def little_row(lanes: list[dict]) -> str | None:
    """Mean per-call latency of each lane against connections / throughput (Little's law)."""
    if not all("little_check" in x for x in lanes):
        return None
    checks = [x["little_check"] for x in lanes]
    return (" / ".join(f"{x['mean_us'] / 1000:.3f}" for x in checks) + " ms = "
            + " / ".join(f"{x['ratio']:.2f}" for x in checks)
            + f" x {checks[0]['connections']:g}/throughput (wrk's corrected mean: "
            + " / ".join(f"{x['wrk_corrected_ratio']:.2f}" for x in checks) + " x)")


def unsaturated_rows(era: str, u: dict) -> list[tuple[str, str]]:
    """Table rows of the unsaturated phase (`unsaturated` in bench_calls), or why it was skipped."""
    if "skipped" in u:
        return [(f"{era} unsaturated phase", f"skipped: {u['skipped']}")]
    d, p, n = u["direct"], u["portal"], u.get("nginx")
    lanes = [d, p] + ([n] if n else [])
    k = conn_label(u["connections"], short=True)
    names = "d / p" + (" / n" if n else "")

    def added(key: str) -> str:
        text = f"{u[key]:.3f} ms" + (f" (nginx {u['nginx_' + key]:.3f} ms)" if n else "")
        return text

    per_round = ", ".join(f"{x:.3f}" for x in u["added_p50_rounds_ms"])
    rows = [
        (f"{era} added p50, {conn_label(u['connections'])}",
         added("added_p50_ms") + f"; medians of {u['round_count']} rounds of {u['duration_s']:g} s, "
                                 f"portal per round {per_round}"),
        (f"{era} added p99, {conn_label(u['connections'])}", added("added_p99_ms")),
    ]
    rows += latency_rows(f"{era} {{}} {k} {names}", lanes)
    rows += [
        (f"{era} ok calls/s {k} {names}", " / ".join(f"{x['ok_rps']:.0f}" for x in lanes)),
        (f"{era} failed calls {k} ({names.replace(' ', '')})",
         " / ".join(str(x["bad"] + sum(x["errors"].values())) for x in lanes)),
    ]
    cpu = cpu_row(d, p, n)
    if cpu:
        rows.append((f"{era} CPU us/call {k}", cpu))
    return rows


def latency_rows(label: str, lanes: list[dict]) -> list[tuple[str, str]]:
    """p50/p90/p99 of every lane, and their means against Little's law; `label` has a `{}` for
    the figure's name."""
    rows = [
        (label.format(q), " / ".join(f"{x[q + '_us'] / 1000:.3f}" for x in lanes) + " ms")
        for q in ("p50", "p90", "p99")
    ]
    little = little_row(lanes)
    if little:
        rows.append((label.format("mean"), little))
    return rows


def table(out: dict) -> str:
    rows: list[tuple[str, str]] = []
    conns = out["load"]["connections"]
    for era in ("modern", "legacy"):
        c = out["calls"].get(era)
        if not c:
            continue
        d, p = c["direct"], c["portal"]
        # The nginx reference lane (modern only): figures, or why it was skipped.
        n = c.get("nginx") if isinstance(c.get("nginx"), dict) and "ok_rps" in c["nginx"] else None
        lanes = [d, p] + ([n] if n else [])
        names = "direct / portal" + (" / nginx" if n else "")

        def per_round(ratios: list[float]) -> str:
            return f"medians of {len(ratios)} rounds; per round {', '.join(f'{x:.2f}' for x in ratios)}"

        rows += [
            (f"{era} ok calls/s direct", f"{d['ok_rps']:.0f}"),
            (f"{era} ok calls/s portal", f"{p['ok_rps']:.0f}"),
        ]
        if n:
            rows.append((f"{era} ok calls/s nginx", f"{n['ok_rps']:.0f}"))
        rows.append((f"{era} ratio portal/direct", f"{c['throughput_ratio']:.2f}x ({per_round(c['rounds'])})"))
        if n:
            rows += [
                (f"{era} ratio nginx/direct", f"{c['nginx_ratio']:.2f}x ({per_round(c['nginx_rounds'])})"),
                (f"{era} ratio portal/nginx", f"{c['portal_to_nginx_ratio']:.2f}x (medians)"),
            ]
        elif isinstance(c.get("nginx"), dict) and "skipped" in c["nginx"]:
            rows.append((f"{era} nginx lane", f"skipped: {c['nginx']['skipped']}"))
        # At saturation p50 is mostly queueing (about connections / throughput): labelled with
        # the connections, next to the unsaturated phase's added latency.
        k = conn_label(conns, short=True)
        rows += latency_rows(f"{era} {{}} {k} {names}", lanes)
        rows += [
            (f"{era} added p50, {conn_label(conns)}",
             f"{c['added_p50_ms']:.3f} ms" + (f" (nginx {c['nginx_added_p50_ms']:.3f} ms)" if n else "")),
            (f"{era} added p99, {conn_label(conns)}",
             f"{c['added_p99_ms']:.3f} ms" + (f" (nginx {c['nginx_added_p99_ms']:.3f} ms)" if n else "")),
            (f"{era} failed calls ({'/'.join(x[0] for x in names.split(' / '))})",
             " / ".join(str(x["bad"] + sum(x["errors"].values())) for x in lanes)),
        ]
        cpu = cpu_row(d, p, n)
        if cpu:
            rows.append((f"{era} CPU us/call", cpu))
        if isinstance(c.get("unsaturated"), dict):
            rows += unsaturated_rows(era, c["unsaturated"])
    if "upstream_down_events" in out["calls"]:
        rows.append(("upstream marked down (calls)", str(out["calls"]["upstream_down_events"])))
    if "demo_stdio" in out["calls"]:
        r = out["calls"]["demo_stdio"]
        rows.append(("demo stdio calls/s (p50)", f"{r['ok_rps']:.0f} ({r['p50_us'] / 1000:.3f} ms)"))
    m = out["memory"]
    for key, label in (
        ("demo_after_startup", "RSS demo config, idle"),
        ("demo_after_load", "RSS demo config, after load"),
        ("bench_portal_after_startup", "RSS bench portal, idle"),
        ("bench_portal_after_load", "RSS bench portal, after load"),
        ("list_portal_after_startup", "RSS list portal, idle"),
        ("list_portal_after_load", "RSS list portal, after lists"),
    ):
        if key in m:
            rows.append((label, f"{m[key]['VmRSS']:.1f} MiB (peak {m[key]['VmHWM']:.1f})"))
    if "list" in out:
        p, b = out["list"]["portal"], out["list"]["direct_one_server"]
        rows += [
            ("tools/list portal p50 / p99", f"{p['full_p50_ms']:.2f} / {p['full_p99_ms']:.2f} ms "
                                            f"({p['tools']} tools, {p['pages']} pages)"),
            ("tools/list portal bytes", f"{p['bytes']} ({' + '.join(map(str, p['page_bytes']))})"),
            ("tools/list tools seen min/max", f"{p['tools_min']} / {p['tools_max']} "
                                              f"(upstream-down events: {p['upstream_down_events']})"),
            ("tools/list direct p50 / p99", f"{b['full_p50_ms']:.2f} / {b['full_p99_ms']:.2f} ms "
                                            f"({b['tools']} tools, 1 server, {b['bytes']} B)"),
        ]
    if "sessions" in out:
        s = out["sessions"]
        n = s["sessions"]
        rows += [
            (f"sessions: {n} legacy + {s['modern_clients']} modern in parallel",
             f"{s['open']['sessions_opened']} sessions opened in {s['open']['seconds']:.1f} s; errors {s['errors']} "
             f"(baseline {s['baseline']['errors']}, open {s['open']['errors']}, reuse {s['reuse']['errors']})"),
            ("sessions: RSS baseline -> idle sessions",
             f"{s['rss_baseline']['VmRSS']:.1f} -> {s['rss_sessions']['VmRSS']:.1f} MiB "
             f"({s['sessions_in_memory']:.0f} sessions in memory)"),
            ("sessions: memory per idle session", f"{s['rss_per_idle_session_kib']:.1f} KiB"),
            (f"sessions: proxy CPU idle, {s['idle_seconds']:g} s",
             f"{s['idle_cpu_ms_no_sessions']:.0f} ms without sessions, {s['idle_cpu_ms_sessions']:.0f} ms "
             f"with {n} idle sessions"),
        ]
    w = max(len(r[0]) for r in rows)
    return "\n".join(f"{k:<{w}}  {v}" for k, v in rows)

