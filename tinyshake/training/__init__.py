"""Training a stage: the plan, the lecture's loop and the pieces around it, the machine it runs on."""
