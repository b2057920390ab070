"""Agent threads: the model provider, the tool loop and streamed replies."""
