"""The operators' dashboard: `streamlit run dashboards/app.py` (config from EDGEFLEET_DASHBOARD_* variables)."""

import sys
from pathlib import Path

# `streamlit run` puts only this file's directory on sys.path; the pages import the project's packages.
REPO_ROOT = str(Path(__file__).resolve().parent.parent)
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

import streamlit as st  # noqa: E402

from dashboards.common import config_or_stop, sidebar  # noqa: E402

PAGES = Path(__file__).resolve().parent / "pages"

st.set_page_config(page_title="edgefleet", page_icon=":material/hub:", layout="wide")
navigation = st.navigation(
    [
        st.Page(PAGES / "fleet.py", title="Fleet", icon=":material/dns:", default=True),
        st.Page(PAGES / "rounds.py", title="Rounds", icon=":material/autorenew:", url_path="rounds"),
        st.Page(PAGES / "caching.py", title="Caching", icon=":material/inventory_2:", url_path="caching"),
        st.Page(PAGES / "tokens.py", title="Tokens", icon=":material/text_fields:", url_path="tokens"),
        st.Page(PAGES / "models.py", title="Models", icon=":material/model_training:", url_path="models"),
        st.Page(PAGES / "pipeline.py", title="Pipeline", icon=":material/linear_scale:", url_path="pipeline"),
        st.Page(PAGES / "leaderboard.py", title="Leaderboard", icon=":material/leaderboard:", url_path="leaderboard"),
    ]
)
sidebar(config_or_stop())
navigation.run()
