from zeebe_sim.cli import main

main()
