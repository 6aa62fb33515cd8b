"""Offline training of STLDM on radar data (data pipeline, `nowcast train`)."""
