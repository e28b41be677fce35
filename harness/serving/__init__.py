"""The exported model folder, predict and the HTTP service; imports no training code."""
