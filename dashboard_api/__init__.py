"""The HTTP API and web dashboard for coordinators and supply staff (FastAPI)."""
