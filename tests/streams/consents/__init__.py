"""Agency consent: API, agent and the agency balance view."""
