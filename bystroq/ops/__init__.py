"""Use cases shared by the CLI and the HTTP API: submit, cancel, retry, server inspection
and tube control, consuming, and batches. They take a config and a store and return plain
values; rendering is the caller's."""
