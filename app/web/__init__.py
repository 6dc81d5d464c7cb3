"""The central HTTP API and dashboard, served by every Faust worker."""
