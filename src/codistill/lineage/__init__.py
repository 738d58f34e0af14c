"""MLflow lineage of pipeline runs: parent and stage runs, and the registered students."""
