"""heteroplane control plane: the service, its data, its API and its reconciler."""
