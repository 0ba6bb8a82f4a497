"""One module per user action: recipe -> objects -> core calls -> files. No printing here."""
