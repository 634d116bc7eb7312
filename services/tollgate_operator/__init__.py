"""The kopf operator: RoutingPolicy and CostBudget resources into live routing, budgets
and alert rules."""

GROUP = "tollgate.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
