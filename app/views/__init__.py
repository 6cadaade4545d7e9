"""The dashboard's pages, run by app/app.py's st.navigation; a package so that `pip install .` ships them."""
