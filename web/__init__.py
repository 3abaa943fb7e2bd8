"""The operator console (/ui): server-rendered pages with live charts of cost, utilisation and SLA attainment."""
