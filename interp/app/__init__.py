"""The Streamlit face: support.py holds the app's logic (testable without Streamlit); the pages are apps/."""
