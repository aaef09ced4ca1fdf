"""The trainer's callbacks: loss plot and spike guard, metrics file, HF checkpointer, ICL evaluation during training."""
