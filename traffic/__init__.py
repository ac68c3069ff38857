"""Production traffic for the loop: scenarios, the replay client, and its ground truth delivered
later."""
