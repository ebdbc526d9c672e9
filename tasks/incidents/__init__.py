"""Incidents: the models and the store (outside the platform's database), the escalation policy
as pure functions, paging through notification blocks, commands, the initial assessment, taking
over after a crash, and the post-incident report."""
