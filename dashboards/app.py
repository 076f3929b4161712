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

st.set_page_config(page_title="edgefleet", page_icon="🛰️", layout="wide")
navigation = st.navigation(
    [
        st.Page(PAGES / "fleet.py", title="Fleet", icon="🖥️", default=True),
        st.Page(PAGES / "rounds.py", title="Rounds", icon="🔁", url_path="rounds"),
        st.Page(PAGES / "caching.py", title="Caching", icon="📦", url_path="caching"),
        st.Page(PAGES / "tokens.py", title="Tokens", icon="🔤", url_path="tokens"),
        st.Page(PAGES / "models.py", title="Models", icon="🧠", url_path="models"),
    ]
)
sidebar(config_or_stop())
navigation.run()
