"""The cost-anomaly agent: its LangGraph graph is ``cost_anomaly.graph:build_graph`` (see ../manifest.yaml)."""
