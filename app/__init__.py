"""Streamlit capacity-planning dashboard over the moeplan notebook API; see DESIGN.md section 8."""
