"""Streamlit capacity-planning dashboard over the moeplan notebook API; see DESIGN.md section 8.

`moeplan app` runs app.py (moeplan.api.app_script finds it)."""
