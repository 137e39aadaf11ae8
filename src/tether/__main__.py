from tether.launch import entry

entry()
