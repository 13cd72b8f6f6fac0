"""deploy/grafana/dashboard.json: well-formed for provisioning, and it shows what on-call needs."""

from __future__ import annotations

from tests.deploy.support import dashboard, dashboard_panels

# Panel titles on-call relies on (the runbooks in README.md refer to them).
REQUIRED_TITLES = {
    "Posts consumed vs decisions emitted", "Posts consumed per worker", "End-to-end latency percentiles",
    "Batch stage p99", "Decisions by action", "Action share", "Label hits by label and action",
    "Dead letters by reason", "Flagged rate: observed vs reference", "Drift statistic / critical value",
    "Batch size", "Serving bundle and policy per worker", "Bundle swaps and rejections",
    "Readiness per worker", "End-to-end p99 per worker",
}


def test_dashboard_identity() -> None:
    board = dashboard()
    assert board["uid"] == "feedwarden-worker"
    assert "id" not in board or board["id"] is None  # provisioning assigns ids
    variables = {v["name"]: v for v in board["templating"]["list"]}
    source = variables["datasource"]
    assert source["type"] == "datasource" and source["query"] == "prometheus"
    assert {"job", "instance"} <= set(variables)


def test_panels_are_well_formed() -> None:
    panels = list(dashboard_panels())
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel.get("description"), f"{panel['title']}: describe what the panel shows"
        refs = [t["refId"] for t in panel["targets"]]
        assert refs and len(refs) == len(set(refs)), panel["title"]


def test_panels_do_not_overlap() -> None:
    cells: dict[tuple[int, int], str] = {}
    for panel in dashboard_panels():
        grid = panel["gridPos"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = panel["title"]


def test_required_panels_present() -> None:
    titles = {p["title"] for p in dashboard_panels()}
    assert not REQUIRED_TITLES - titles, sorted(REQUIRED_TITLES - titles)
