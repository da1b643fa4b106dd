"""Validation page: a predicted-vs-measured report, with error statistics per kernel class."""
from __future__ import annotations

import importlib.util
import io
from pathlib import Path

import pandas as pd
import streamlit as st
import yaml

from app import charts, views
from app.ui import common

PREFIX = "validation"


def reports_dir() -> Path:
    """validate/reports/h200/, found without importing `validate` (which would load torch)."""
    spec = importlib.util.find_spec("validate")
    root = Path(next(iter(spec.submodule_search_locations))) if spec and spec.submodule_search_locations \
        else Path(__file__).resolve().parents[2] / "validate"
    return root / "reports" / "h200"


def committed_reports(folder: Path) -> list[Path]:
    """CSV files under the committed report folder that hold predictions beside measurements."""
    found = []
    for path in sorted(folder.rglob("*.csv")) if folder.is_dir() else []:
        try:
            head = pd.read_csv(path, nrows=0)
        except (OSError, ValueError):
            continue
        lower = [c.lower() for c in head.columns]
        if any(c in lower for c in views.MEASURED_COLUMNS) and views.prediction_columns(
                pd.read_csv(path, nrows=5)):
            found.append(path)
    return found


@st.cache_data(show_spinner=False)
def load(source: str, data: bytes | None) -> tuple[pd.DataFrame, list[str]]:
    frame = pd.read_csv(io.BytesIO(data)) if data is not None else pd.read_csv(source)
    return views.read_report(frame, Path(source).name)


def render() -> None:
    st.title("Validation: predicted vs measured")
    folder = reports_dir()
    found = committed_reports(folder)
    with st.sidebar:
        upload = st.file_uploader("Validation report CSV", type=["csv"], key=f"{PREFIX}.upload")
        choice = None
        if found and upload is None:
            choice = st.selectbox("Committed report", found, format_func=lambda p: str(p.relative_to(folder.parent)),
                                  key=f"{PREFIX}.report")
    if upload is None and choice is None:
        st.info(f"No committed validation report with predictions yet (looked in {folder}); upload a report CSV "
                "with a measured_s column and predicted times (predicted_* columns, or <variant>_s beside "
                "<variant>_ratio as `perfmodel validate report` writes).")
        return
    source = upload.name if upload is not None else str(choice)
    try:
        report, variants = load(source, upload.getvalue() if upload is not None else None)
    except (views.USER_ERRORS + (pd.errors.ParserError, UnicodeDecodeError)) as err:
        common.show_error(err)
        return
    if "split" in report.columns and report["split"].nunique() > 1:
        splits = sorted(report["split"].unique())
        picked = st.sidebar.multiselect("Cases", splits, ["evaluation"] if "evaluation" in splits else splits,
                                        key=f"{PREFIX}.split")
        report = report[report["split"].isin(picked)]
    if report.empty:
        st.warning("No measured cases to show (all failed, or none in the chosen split).")
        return
    _show(report, variants, source)


def _show(report: pd.DataFrame, variants: list[str], source: str) -> None:
    stats = views.error_stats(report, variants)
    pooled = "all kernels" if (stats["kernel_class"] == "all kernels").any() else "all"
    overall = stats[stats["kernel_class"] == pooled]
    st.caption(f"{source}: {len(report)} measured cases, {report['kernel_class'].nunique()} kernel classes")
    cols = st.columns(max(len(overall), 1))
    for col, (_, row) in zip(cols, overall.iterrows()):
        col.metric(f"{row['prediction']}: median |error|", f"{row['median_ape_pct']:.1f}%",
                   help=f"{pooled}: 90th percentile {row['p90_ape_pct']:.1f}% over {row['cases']} cases")
    st.dataframe(stats, hide_index=True)
    variant = st.radio("Prediction", variants, horizontal=True, key=f"{PREFIX}.variant") if len(variants) > 1 \
        else variants[0]
    st.vega_lite_chart(spec=charts.predicted_vs_measured(report, variant), width="stretch")
    with st.expander("Cases"):
        st.dataframe(report, hide_index=True)
    common.export_buttons(PREFIX, yaml.safe_dump({"report": source, "predictions": variants}, sort_keys=False),
                          {"error-stats": stats, "cases": report})
