"""The cost report's parts (``bench/cost_report.py`` runs them): the model's assumptions (prices, latencies),
the virtual clock, DynamoDB's item sizing, the AWS meter, Lambda's billing, the scenario that runs the real
handlers, and the report."""
