/* qlua.h: qlua's public header: its version. (Native extension hooks will be declared here.) */
#ifndef QLUA_H
#define QLUA_H

#define QLUA_VERSION "0.1.0"

#endif
