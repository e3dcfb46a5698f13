-- os is not available
os.execute("touch /tmp/lmc-escaped")
