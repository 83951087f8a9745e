"""Staff screens for post-office counters and mobile teams."""
