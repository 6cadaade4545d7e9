"""Streamlit capacity-planning dashboard over the moeplan notebook API; see DESIGN.md section 8."""

from pathlib import Path

APP_PATH = Path(__file__).with_name("app.py")  # what `moeplan app` hands to `streamlit run`
