"""What tests, bench and `starfish demo` share to run the product for real: child processes, free
ports, polling, a throwaway PostgreSQL, a served cloud, seeding and selling, gate launchers,
simulated hardware and brokers. Product code never imports this package.
"""
