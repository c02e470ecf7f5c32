"""Orchestration: each job wires adapters to the domain and reads as one log line per step."""
