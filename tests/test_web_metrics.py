"""The metrics page: server-side SVG plots whose data attributes follow the store, the series
behind them, and tokens with a cost only where one is known."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta

from minetune.progress import bucket
from minetune.server.charts import bar_chart, line_chart
from webchat import seed, web_settings
from webusers import served

HTML = {"Accept": "text/html"}


def chart_points(page: str, chart_id: str) -> list[dict[str, object]]:
    match = re.search(rf'<svg class="chart" id="{chart_id}"[^>]*data-points="([^"]*)"', page)
    assert match, f"no chart {chart_id}"
    return json.loads(match.group(1).replace("&#34;", '"').replace("&quot;", '"'))


def test_line_and_bar_charts_carry_their_data() -> None:
    svg = str(line_chart("c", "Mean <stars>", [("#1", 2.0), ("#2", 4.5)], (0, 5)))
    assert svg.startswith('<svg class="chart" id="c" data-kind="line"')
    assert chart_points(svg, "c") == [{"label": "#1", "value": 2.0}, {"label": "#2", "value": 4.5}]
    assert re.findall(r'<circle class="point"[^>]*data-value="([^"]+)"', svg) == ["2", "4.50"]
    assert "<polyline" in svg and "Mean &lt;stars&gt;" in svg  # titles are escaped
    empty = str(line_chart("e", "Nothing", [], empty="No ratings yet."))
    assert chart_points(empty, "e") == [] and "No ratings yet." in empty

    bars = str(bar_chart("b", "Examples", [("SFT", 12), ("DPO", 3)], [("minimum", 10), ("recommended", 50)]))
    assert re.findall(r'<rect class="bar"[^>]*data-label="(\w+)" data-value="(\d+)"', bars) == [
        ("SFT", "12"),
        ("DPO", "3"),
    ]
    assert re.findall(r'<line class="guide"[^>]*data-label="(\w+)" data-value="(\d+)"', bars) == [
        ("minimum", "10"),
        ("recommended", "50"),
    ]


def test_series_are_per_day_over_several_days_else_per_event() -> None:
    start = datetime(2026, 1, 1, 9, tzinfo=UTC)
    days = [
        (start + timedelta(days=d, hours=h), float(v))
        for d, h, v in [(0, 0, 2), (0, 1, 4), (1, 0, 5), (3, 0, 1)]
    ]
    series = bucket(days, "rating")
    assert series.bucket == "day"
    assert [(p.label, p.value, p.count) for p in series.points] == [
        ("2026-01-01", 3.0, 2),
        ("2026-01-02", 5.0, 1),
        ("2026-01-04", 1.0, 1),
    ]
    same_day = bucket([(start, 2.0), (start, 5.0)], "rating")
    assert same_day.bucket == "every rating" and [p.value for p in same_day.points] == [2.0, 5.0]
    many = bucket([(start, float(i % 5 + 1)) for i in range(90)], "rating")
    assert many.bucket == "every 3 ratings" and len(many.points) == 30
    assert bucket([(start, 10.0), (start, 5.0)], "answer", total=True).points[0].value == 10.0


def test_the_metrics_page_plots_follow_the_ratings() -> None:
    with served(web_settings(None)) as web:
        empty = web.client.get("/metrics", headers=HTML)
        assert empty.status_code == 200 and chart_points(empty.text, "chart-stars") == []

        turn = seed(web.store, "Plan my week", [("Do everything Monday.", 2), ("Spread it out.", None)])
        page = web.client.get("/metrics", headers=HTML).text
        assert [p["value"] for p in chart_points(page, "chart-stars")] == [2]
        assert chart_points(page, "chart-attempts") == []
        examples = {p["label"]: p["value"] for p in chart_points(page, "chart-examples")}
        assert examples == {"SFT": 0, "DPO": 0, "KTO": 1}
        assert (
            'data-label="minimum" data-value="10"' in page
            and 'data-label="recommended" data-value="50"' in page
        )

        retry = web.store.turn(turn).attempts[1]
        web.store.add_feedback(retry.id, "explicit", stars=5)
        after = web.client.get("/metrics", headers=HTML).text
        assert [p["value"] for p in chart_points(after, "chart-stars")] == [2, 5]
        assert [p["value"] for p in chart_points(after, "chart-attempts")] == [2]
        examples = {p["label"]: p["value"] for p in chart_points(after, "chart-examples")}
        assert examples == {"SFT": 1, "DPO": 1, "KTO": 2}

        data = web.client.get("/api/metrics").json()
        assert [p["value"] for p in data["stars"]["points"]] == [2.0, 5.0]
        assert data["examples"] == {"sft": 1, "dpo": 1, "kto": 2} and data["ratings"] == 2


def test_tokens_are_counted_and_cost_is_only_given_when_known() -> None:
    with served(web_settings(None)) as web:
        version = web.store.active_version()
        conv = web.store.start_conversation()
        for spec, prompt, completion in [
            ("ollama:llama3.2", 100, 20),
            ("openai:gpt-4o-mini", 50, 10),
            ("openai:gpt-4o-mini", None, None),
        ]:
            turn = web.store.add_turn(conv.id, f"question for {spec}")
            web.store.add_attempt(
                turn.id,
                version_id=version.id,
                model_spec=spec,
                messages=[],
                response="answer",
                latency_ms=1.0,
                prompt_tokens=prompt,
                completion_tokens=completion,
            )
        data = web.client.get("/api/metrics").json()
        usage = {u["model"]: u for u in data["usage"]}
        assert (
            usage["ollama:llama3.2"]["cost_usd"] == 0.0 and usage["ollama:llama3.2"]["prompt_tokens"] == 100
        )
        hosted = usage["openai:gpt-4o-mini"]
        assert (hosted["attempts"], hosted["prompt_tokens"], hosted["completion_tokens"]) == (2, 50, 10)
        assert hosted["without_usage"] == 1 and hosted["cost_usd"] is None
        assert data["total_cost"] is None
        assert [p["value"] for p in data["tokens"]["points"]] == [120.0, 60.0]
        page = web.client.get("/metrics", headers=HTML).text
        assert "unknown: no price is known for this model" in page and "Total cost: unknown" in page
