"""chatcore: an event-sourced core for real-time AI chat."""
