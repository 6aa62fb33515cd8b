"""The nowcasting service: HTTP API, Redis queue, batched ensemble worker."""
