"""The wire between a front end and the worker, without torch: the protocol (messages, their
checks and constructors), the client that starts and reads a worker, launch commands, the recorder."""
